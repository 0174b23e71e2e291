//! `cohort sbatch RECIPE`: a complete batch job script for a recipe — `#SBATCH` lines
//! from `[slurm]` and the command line, a job token written to a 0600 file, and one
//! `srun cohort launch` step that the batch shell forwards `USR1`/`TERM` to — printed,
//! written to a file, or submitted (`--submit`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use cohort_slurm::render::{shell_quote, shell_words, Resources, SbatchSpec, Signal, SrunSpec};

use crate::recipe::{self, slurm as rs};

/// Write an sbatch script that runs a recipe on every node of the allocation
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cohort sbatch recipes/gb200-nvl72-disagg.toml --nodes 32 --time 4:00:00 > job.sbatch
  sbatch job.sbatch
  cohort sbatch recipes/hgx-h100-disagg.toml --nodes 4 --time 2:00:00 --submit

Run it (and the job) from the directory the results should go under: the job writes
`<results>/<job id>/` and Slurm's output `<results>/slurm-<job id>.out` there.")]
pub(crate) struct SbatchArgs {
    /// The recipe file; its `[slurm]` table holds the defaults of the options below
    recipe: PathBuf,
    /// Nodes to allocate [default: `slurm.nodes`, else computed from `[deploy]` and
    /// `slurm.gpus_per_node` when every role gives a `count`]
    #[arg(long, short = 'N')]
    nodes: Option<u32>,
    /// Time limit in Slurm's format (`30`, `4:00:00`, `1-12`) [default: `slurm.time`, else
    /// the partition's]
    #[arg(long, short = 't')]
    time: Option<String>,
    /// Partition [default: `slurm.partition`]
    #[arg(long, short = 'p')]
    partition: Option<String>,
    /// Account to charge [default: `slurm.account`]
    #[arg(long, short = 'A')]
    account: Option<String>,
    /// Quality of service [default: `slurm.qos`]
    #[arg(long, short = 'q')]
    qos: Option<String>,
    /// Job name [default: the recipe's `name`]
    #[arg(long, short = 'J')]
    job_name: Option<String>,
    /// The cohort binary the job runs on every node (on a file system the nodes share)
    /// [default: this binary]
    #[arg(long, value_name = "PATH")]
    cohort: Option<PathBuf>,
    /// Where results go, relative to the job's working directory; each job writes
    /// `DIR/<job id>/`
    #[arg(long, value_name = "DIR", default_value = "results")]
    results: PathBuf,
    /// Write the script to FILE instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Submit the script with `sbatch` and print `submitted job <id>` (the script goes to
    /// `--output` if given, else straight to sbatch)
    #[arg(long)]
    submit: bool,
}

/// Everything the script needs, resolved once from the arguments and the recipe.
#[derive(Debug)]
struct Settings {
    /// The recipe, absolute: the job may run from another directory.
    recipe: String,
    recipe_name: String,
    cohort: String,
    job_name: String,
    nodes: u32,
    /// Where `nodes` came from, for the script's header.
    nodes_from: String,
    time: Option<Duration>,
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    /// Slurm's output file pattern.
    output: String,
    results: String,
    slurm: rs::Slurm,
    script_file: Option<PathBuf>,
    submit: bool,
}

pub(crate) fn run(args: &SbatchArgs) -> anyhow::Result<()> {
    let settings = resolve(args)?;
    let script = render(&settings)?;
    ensure_output_dir(&settings.output)?;
    if let Some(file) = &settings.script_file {
        std::fs::write(file, &script)
            .with_context(|| format!("cannot write the script to `{}`", file.display()))?;
    } else if !settings.submit {
        std::io::stdout().lock().write_all(script.as_bytes())?;
    }
    if settings.submit {
        let job = submit(settings.script_file.as_deref(), &script)?;
        writeln!(std::io::stdout().lock(), "submitted job {job}")?;
        let _ = writeln!(
            std::io::stderr().lock(),
            "results in `{}/{job}/`, Slurm's output in `{}`",
            settings.results,
            settings.output.replace("%j", &job)
        );
    }
    Ok(())
}

fn resolve(args: &SbatchArgs) -> anyhow::Result<Settings> {
    let recipe = recipe::load(&args.recipe)?;
    let slurm = recipe.slurm.clone().unwrap_or_default();
    let recipe_path = std::fs::canonicalize(&args.recipe)
        .with_context(|| format!("cannot resolve `{}`", args.recipe.display()))?;
    let cohort = match &args.cohort {
        Some(p) => std::path::absolute(p)
            .with_context(|| format!("cannot make `--cohort {}` absolute", p.display()))?,
        None => std::env::current_exe().context("cannot find the path of this cohort binary")?,
    };

    let (nodes, nodes_from) = match (args.nodes, slurm.nodes) {
        (Some(n), _) => (n, "from `--nodes`".to_owned()),
        (None, Some(n)) => (n, "from `slurm.nodes`".to_owned()),
        (None, None) => match rs::required_nodes(&recipe.deploy, slurm.gpus_per_node) {
            Ok(count) => (count.nodes, format!("for {}", count.reason)),
            Err(why) => bail!(
                "`{}`: how many nodes? {why}; give `nodes` in `[slurm]` or `--nodes N`",
                args.recipe.display()
            ),
        },
    };
    if nodes == 0 {
        bail!("`--nodes` must be at least 1; given 0");
    }
    if let Some(seg) = slurm.segment.filter(|s| !nodes.is_multiple_of(*s)) {
        bail!("`slurm.segment` ({seg}) must divide the node count ({nodes}, {nodes_from})");
    }

    let time = match (&args.time, &slurm.time) {
        (Some(t), _) => Some(rs::parse_time(t).map_err(|e| anyhow!("`--time` {e}"))?),
        // Checked when the recipe was loaded.
        (None, Some(t)) => Some(rs::parse_time(t)?),
        (None, None) => None,
    };
    if let Some(limit) = time.filter(|l| u64::from(slurm.signal_before_s) >= l.as_secs()) {
        bail!(
            "`slurm.signal_before_s` ({} s) must be shorter than the time limit ({} s): the \
             drain signal would come before the job starts",
            slurm.signal_before_s,
            limit.as_secs()
        );
    }
    let pick = |flag: &str, given: &Option<String>, recipe: &Option<String>| {
        let Some(v) = given else {
            return Ok(recipe.clone());
        };
        match rs::directive_value_problem(v) {
            Some(problem) => Err(anyhow!("`--{flag}` {problem}; given `{v}`")),
            None => Ok(Some(v.clone())),
        }
    };
    let partition = pick("partition", &args.partition, &slurm.partition)?;
    let account = pick("account", &args.account, &slurm.account)?;
    let qos = pick("qos", &args.qos, &slurm.qos)?;
    let job_name = match pick("job-name", &args.job_name, &None)? {
        Some(name) => name,
        None => match rs::directive_value_problem(&recipe.name) {
            None => recipe.name.clone(),
            Some(problem) => bail!(
                "the recipe's `name` cannot be the job name: it {problem}; given `{}`; \
                 give `--job-name`",
                recipe.name
            ),
        },
    };

    let results = utf8(&args.results, "--results")?;
    let results = match results.trim_end_matches('/') {
        "" if results.starts_with('/') => "/".to_owned(),
        "" => bail!("`--results` must not be empty"),
        r => r.to_owned(),
    };
    let output = match &slurm.output {
        Some(o) => o.clone(),
        None => format!("{}/slurm-%j.out", results.trim_end_matches('/')),
    };
    if let Some(problem) =
        rs::directive_value_problem(&output).or_else(|| rs::output_problem(&output))
    {
        bail!(
            "Slurm's output file `{output}` {problem}; set `slurm.output` or another `--results`"
        );
    }

    Ok(Settings {
        recipe: utf8(&recipe_path, "the recipe path")?,
        recipe_name: recipe.name.clone(),
        cohort: utf8(&cohort, "--cohort")?,
        job_name,
        nodes,
        nodes_from,
        time,
        partition,
        account,
        qos,
        output,
        results,
        slurm,
        script_file: args.output.clone(),
        submit: args.submit,
    })
}

fn utf8(path: &Path, what: &str) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("`{what}` must be valid UTF-8; given `{}`", path.display()))
}

fn render(s: &Settings) -> anyhow::Result<String> {
    let header = vec![
        format!(
            "Rendered by cohort {} (`cohort sbatch`) from the recipe `{}`:",
            env!("CARGO_PKG_VERSION"),
            s.recipe_name
        ),
        format!("  {}", s.recipe),
        format!("{} node(s), {}.", s.nodes, s.nodes_from),
        "Submit it from the directory the results should go under; re-render it rather than \
         edit it."
            .to_owned(),
    ];
    let spec = SbatchSpec {
        header,
        job_name: Some(s.job_name.clone()),
        resources: Resources {
            nodes: s.nodes,
            ntasks_per_node: Some(1),
            gpus_per_node: Some(s.slurm.gpus_per_node).filter(|g| *g > 0),
            cpus_per_task: None,
            partition: s.partition.clone(),
            segment: s.slurm.segment,
            exclusive: s.slurm.exclusive,
            extra: s.slurm.extra.clone(),
        },
        het_groups: Vec::new(),
        time: s.time,
        account: s.account.clone(),
        qos: s.qos.clone(),
        signal: Some(Signal {
            name: "USR1".to_owned(),
            seconds_before: s.slurm.signal_before_s,
            batch_shell_only: true,
        }),
        output: Some(s.output.clone()),
        error: None,
        body: body(s)?,
    };
    Ok(spec.render()?)
}

/// The script after the `#SBATCH` lines.
fn body(s: &Settings) -> anyhow::Result<String> {
    let srun = SrunSpec {
        ntasks_per_node: Some(1),
        kill_on_bad_exit: true,
        command: vec![
            s.cohort.clone(),
            "launch".to_owned(),
            "--recipe".to_owned(),
            s.recipe.clone(),
            "--bootstrap".to_owned(),
            "slurm".to_owned(),
        ],
        ..SrunSpec::default()
    }
    .args()?;
    let exports: String = s
        .slurm
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    let exports = if exports.is_empty() {
        String::new()
    } else {
        format!("\n# From the recipe's `[slurm.env]`; srun passes them to every rank.\n{exports}")
    };
    let before = s.slurm.signal_before_s;
    Ok(format!(
        r#"set -euo pipefail
: "${{SLURM_JOB_ID:?submit this script with sbatch}}"

# This job's results, under the job's working directory (where sbatch ran):
# `cohort launch --results ROOT` writes `ROOT/<job id>/`; a copy of this script goes there.
mkdir -p {results}/"$SLURM_JOB_ID"
root=$(cd {results} && pwd)
results="$root/$SLURM_JOB_ID"
cp -- "$0" "$results/job.sbatch"

# The job token authenticates the ranks' control-plane calls. It is created with umask
# 077 (mode 0600) and passed by file name only, never on a command line: those are
# world-readable in /proc/<pid>/cmdline.
export COHORT_JOB_TOKEN_FILE="$results/.cohort-token"
rm -f "$COHORT_JOB_TOKEN_FILE"
(umask 077 && od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' > "$COHORT_JOB_TOKEN_FILE")
{exports}
# Draining. `--signal=B:USR1@{before}` signals only this batch shell, {before} s before the
# time limit (as does `scancel --signal=USR1 --batch`); bash runs a trap only between
# commands, so srun runs in the background while the shell waits. The trap forwards USR1
# and TERM to srun, and srun forwards them to every task: `cohort launch` drains, writes
# its results and exits.
srun_pid=
forward() {{
  if [ -n "$srun_pid" ]; then kill -s "$1" "$srun_pid" 2>/dev/null || true; fi
}}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

{srun} --results "$root" &
srun_pid=$!

# A trapped signal interrupts `wait`: wait again until srun has really exited, then
# exit with its status.
while kill -0 "$srun_pid" 2>/dev/null; do
  wait "$srun_pid" || true
done
status=0
wait "$srun_pid" || status=$?
exit "$status"
"#,
        results = shell_quote(&s.results),
        srun = shell_words(&srun),
    ))
}

/// Creates the directory of Slurm's output file (relative to this directory, where the
/// job is submitted from): Slurm opens the file before the script runs and creates no
/// directories, so without it the job fails at once (`JobLaunchFailure`, exit 0:53).
fn ensure_output_dir(output: &str) -> anyhow::Result<()> {
    let Some((dir, _)) = output.rsplit_once('/').filter(|(d, _)| !d.is_empty()) else {
        return Ok(());
    };
    if Path::new(dir).is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| {
        format!("cannot create `{dir}/` for Slurm's output file (Slurm creates no directories)")
    })?;
    let _ = writeln!(
        std::io::stderr().lock(),
        "created `{dir}/` for Slurm's output file (Slurm creates no directories)"
    );
    Ok(())
}

/// Runs `sbatch --parsable` on the script (the file, or the text on stdin) and returns
/// the job id; a failure keeps sbatch's exit status and stderr as they were.
fn submit(file: Option<&Path>, script: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match file {
        Some(f) => {
            cmd.arg(f).stdin(Stdio::null());
        }
        None => {
            cmd.stdin(Stdio::piped());
        }
    }
    let mut child = cmd
        .spawn()
        .context("cannot run `sbatch` (is Slurm's client installed and on PATH?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("cannot pass the script to `sbatch`")?;
    }
    let out = child
        .wait_with_output()
        .context("`sbatch` did not finish")?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    if !out.status.success() {
        let shown = if stderr.is_empty() {
            "(nothing on stderr)".to_owned()
        } else {
            stderr
        };
        return Err(anyhow!(shown).context(format!("`sbatch` failed ({})", out.status)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `<job id>[;<cluster>]`.
    let id = stdout.trim().split(';').next().unwrap_or_default();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "`sbatch --parsable` printed `{}`, not a job id",
            stdout.trim()
        );
    }
    Ok(id.to_owned())
}
