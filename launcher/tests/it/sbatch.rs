//! `cohort sbatch`: the script it writes for shipped recipes (line by line, and through
//! `bash -n`), its errors, `--submit` against a stand-in `sbatch`, and real jobs on a
//! local Slurm cluster whose tasks are a stand-in for `cohort launch` that records what
//! the job gave it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::fixtures::{cohort, repo_root, stderr, stdout, Cluster, TempDir};

/// `[slurm]` for the GB200 recipe: two racks' worth of trays, a segment per rack.
const GB200_SLURM: &str = r#"
[slurm]
gpus_per_node = 4
time = "4:00:00"
partition = "gb200"
segment = 16
exclusive = true
extra = ["--mem=0"]

[slurm.env]
NCCL_DEBUG = "WARN"
"#;

/// The shipped GB200 recipe with its own `[slurm]` table replaced by `slurm`, written
/// into `dir`.
fn gb200_recipe(dir: &Path, slurm: &str) -> PathBuf {
    let text = without_slurm("recipes/gb200-nvl72-disagg.toml");
    let path = dir.join("gb200.toml");
    std::fs::write(&path, format!("{text}{slurm}")).unwrap();
    path
}

/// A shipped recipe up to its `[slurm]` table (and the comment above it).
fn without_slurm(recipe: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(recipe)).unwrap();
    let cut = text
        .find("\n[slurm]")
        .expect("the shipped recipe has a [slurm] table");
    let cut = text[..cut].rfind("\n\n").unwrap_or(cut);
    text[..cut].to_owned() + "\n"
}

/// Runs `cohort sbatch ARGS` in `dir` (where it creates the results directory).
fn sbatch(dir: &Path, args: &[&str]) -> Output {
    cohort()
        .current_dir(dir)
        .arg("sbatch")
        .args(args)
        .output()
        .unwrap()
}

fn rendered(dir: &Path, args: &[&str]) -> String {
    let out = sbatch(dir, args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn directives(script: &str) -> Vec<&str> {
    script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect()
}

/// The script parses as bash.
fn assert_bash_syntax(script: &str) {
    let dir = TempDir::new("sbatch-syntax");
    let file = dir.path().join("job.sbatch");
    std::fs::write(&file, script).unwrap();
    let out = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(out.status.success(), "bash -n: {}\n{script}", stderr(&out));
}

fn srun_line(script: &str) -> &str {
    let lines: Vec<&str> = script.lines().filter(|l| l.starts_with("srun ")).collect();
    assert_eq!(lines.len(), 1, "one srun step:\n{script}");
    lines[0]
}

#[test]
fn script_for_the_gb200_recipe() {
    let dir = TempDir::new("sbatch-gb200");
    let recipe = gb200_recipe(dir.path(), GB200_SLURM);
    let recipe_arg = recipe.to_str().unwrap();
    let script = rendered(
        dir.path(),
        &[
            recipe_arg,
            "--cohort",
            "/opt/my tools/cohort",
            "--account",
            "llm",
        ],
    );
    assert!(
        script.starts_with("#!/bin/bash\n# Rendered by cohort "),
        "{script}"
    );
    let header = format!(
        "# Rendered by cohort {} (`cohort sbatch`) from the recipe `r1-gb200-disagg`:\n#   {}\n\
         # 32 node(s), for 16 prefill × 4 GPUs + 8 decode × 8 GPUs on 4 GPUs per node.\n",
        env!("CARGO_PKG_VERSION"),
        std::fs::canonicalize(&recipe).unwrap().display()
    );
    assert!(script.contains(&header), "{script}");
    assert_eq!(
        directives(&script),
        [
            "#SBATCH --job-name=r1-gb200-disagg",
            "#SBATCH --time=04:00:00",
            "#SBATCH --account=llm",
            "#SBATCH --output=results/slurm-%j.out",
            "#SBATCH --signal=B:USR1@300",
            "#SBATCH --nodes=32",
            "#SBATCH --ntasks-per-node=1",
            "#SBATCH --gpus-per-node=4",
            "#SBATCH --segment=16",
            "#SBATCH --partition=gb200",
            "#SBATCH --exclusive",
            "#SBATCH --mem=0",
        ]
    );
    assert_eq!(
        srun_line(&script),
        format!(
            "srun --ntasks-per-node=1 --kill-on-bad-exit=1 '/opt/my tools/cohort' launch \
             --recipe {} --bootstrap slurm --results \"$root\" &",
            std::fs::canonicalize(&recipe).unwrap().display()
        )
    );
    for expected in [
        "set -euo pipefail\n",
        "root=$(cd results && pwd)\nresults=\"$root/$SLURM_JOB_ID\"\n",
        "export COHORT_JOB_TOKEN_FILE=\"$results/.cohort-token\"\n",
        "(umask 077 && od -An -vtx1 -N32 /dev/urandom | tr -d ' \\n' > \"$COHORT_JOB_TOKEN_FILE\")\n",
        "export NCCL_DEBUG=WARN\n",
        "trap 'forward USR1' USR1\ntrap 'forward TERM' TERM\n",
        "wait \"$srun_pid\" || status=$?\nexit \"$status\"\n",
    ] {
        assert!(script.contains(expected), "`{expected}` in:\n{script}");
    }
    // Everything after `set -e` comes after the directives: sbatch stops reading
    // `#SBATCH` lines at the first command.
    let last_directive = script.rfind("#SBATCH").unwrap();
    assert!(last_directive < script.find("set -euo").unwrap());
    assert_bash_syntax(&script);
    assert!(
        dir.path().join("results").is_dir(),
        "the directory of Slurm's output file exists before submission"
    );
}

#[test]
fn the_command_line_overrides_the_recipe() {
    let dir = TempDir::new("sbatch-overrides");
    let recipe = gb200_recipe(dir.path(), GB200_SLURM);
    let script = rendered(
        dir.path(),
        &[
            recipe.to_str().unwrap(),
            "--nodes",
            "48",
            "--time",
            "1-12",
            "--partition",
            "batch",
            "--qos",
            "high",
            "--job-name",
            "dsr1",
            "--results",
            "out/runs/",
        ],
    );
    let d = directives(&script);
    for expected in [
        "#SBATCH --job-name=dsr1",
        "#SBATCH --time=1-12:00:00",
        "#SBATCH --qos=high",
        "#SBATCH --output=out/runs/slurm-%j.out",
        "#SBATCH --nodes=48",
        "#SBATCH --partition=batch",
    ] {
        assert!(d.contains(&expected), "{expected} in {d:?}");
    }
    assert!(
        script.contains("# 48 node(s), from `--nodes`.\n"),
        "{script}"
    );
    assert!(
        script.contains("mkdir -p out/runs/\"$SLURM_JOB_ID\"\nroot=$(cd out/runs && pwd)\n"),
        "{script}"
    );
    assert!(dir.path().join("out/runs").is_dir());
}

#[test]
fn a_shipped_recipe_without_a_slurm_table() {
    let dir = TempDir::new("sbatch-hgx");
    // The shipped HGX recipe without its `[slurm]` table.
    let shipped =
        std::fs::read_to_string(repo_root().join("recipes/hgx-h100-disagg.toml")).unwrap();
    let cut = shipped
        .find("\n[slurm]")
        .expect("the shipped recipe has a [slurm] table");
    let recipe = dir.path().join("hgx.toml");
    std::fs::write(&recipe, &shipped[..cut]).unwrap();
    let recipe = recipe.to_str().unwrap();
    // `per_domain` roles: the node count is the allocation's to say.
    let out = sbatch(dir.path(), &[recipe]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("`deploy.prefill` gives `per_domain`")
            && err.contains("give `nodes` in `[slurm]` or `--nodes N`"),
        "{err}"
    );

    let script = rendered(dir.path(), &[recipe, "--nodes", "4", "--time", "30"]);
    assert_eq!(
        directives(&script),
        [
            "#SBATCH --job-name=llama70b-h100-disagg",
            "#SBATCH --time=00:30:00",
            "#SBATCH --output=results/slurm-%j.out",
            "#SBATCH --signal=B:USR1@300",
            "#SBATCH --nodes=4",
            "#SBATCH --ntasks-per-node=1",
        ],
        "no GPU request, partition or extras unless asked for"
    );
    let this_cohort = std::fs::canonicalize(env!("CARGO_BIN_EXE_cohort")).unwrap();
    assert!(
        srun_line(&script).contains(&format!(" {} launch ", this_cohort.display())),
        "the running binary by default:\n{script}"
    );
    assert_bash_syntax(&script);
}

#[test]
fn mistakes_are_refused_with_the_flag_or_key() {
    let dir = TempDir::new("sbatch-errors");
    let recipe = gb200_recipe(dir.path(), GB200_SLURM);
    let recipe = recipe.to_str().unwrap();
    let refused = |args: &[&str]| {
        let out = sbatch(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
        stderr(&out)
    };
    let e = refused(&[recipe, "--time", "4h"]);
    assert!(
        e.starts_with("error: `--time` must be a Slurm time: `MINUTES`")
            && e.contains("given `4h`"),
        "{e}"
    );
    let e = refused(&[recipe, "--nodes", "30"]);
    assert_eq!(
        e,
        "error: `slurm.segment` (16) must divide the node count (30, from `--nodes`)\n"
    );
    let e = refused(&[recipe, "--time", "4"]);
    assert!(
        e.contains("`slurm.signal_before_s` (300 s) must be shorter than the time limit (240 s)"),
        "{e}"
    );
    let e = refused(&[recipe, "--partition", "a b"]);
    assert!(e.contains("`--partition` must not contain blanks"), "{e}");

    let typo = gb200_recipe(dir.path(), &GB200_SLURM.replace("partition", "partiton"));
    let e = refused(&[typo.to_str().unwrap()]);
    let line = std::fs::read_to_string(&typo)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("partiton"))
        .unwrap()
        + 1;
    assert!(
        e.contains(&format!(
            "gb200.toml:{line}:1: unknown key `partiton` in `[slurm]` (value `\"gb200\"`); \
             did you mean \"partition\"?"
        )),
        "{e}"
    );
}

#[test]
fn output_writes_the_script_to_a_file() {
    let dir = TempDir::new("sbatch-file");
    let recipe = gb200_recipe(dir.path(), GB200_SLURM);
    let out = sbatch(
        dir.path(),
        &[recipe.to_str().unwrap(), "--output", "job.sbatch"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "the script went to the file");
    let script = std::fs::read_to_string(dir.path().join("job.sbatch")).unwrap();
    assert!(directives(&script).contains(&"#SBATCH --nodes=32"));
    assert_bash_syntax(&script);
}

/// A stand-in `sbatch` on PATH: records its arguments and stdin, then answers like
/// `sbatch --parsable` or fails like sbatch does.
fn fake_sbatch(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/bash\nprintf '%s\\n' \"$@\" > {d}/sbatch.args\ncat > {d}/sbatch.stdin\n\
         if [ -n \"${{FAIL:-}}\" ]; then\n  echo 'sbatch: error: Batch job submission failed: \
         Invalid partition name specified' >&2\n  exit 1\nfi\necho '4242;cluster1'\n",
        d = dir.display()
    );
    let path = bin.join("sbatch");
    std::fs::write(&path, script).unwrap();
    make_executable(&path);
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn submit_runs_sbatch_and_shows_its_failure() {
    let dir = TempDir::new("sbatch-submit");
    let recipe = gb200_recipe(dir.path(), GB200_SLURM);
    let path = fake_sbatch(dir.path());
    let run = |args: &[&str], fail: bool| {
        let mut cmd = cohort();
        cmd.current_dir(dir.path())
            .env("PATH", &path)
            .arg("sbatch")
            .arg(&recipe)
            .args(args);
        if fail {
            cmd.env("FAIL", "1");
        }
        cmd.output().unwrap()
    };

    // No `--output`: the script goes to sbatch's stdin.
    let out = run(&["--submit"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "submitted job 4242\n");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("sbatch.args"), "--parsable\n");
    let stdin = read("sbatch.stdin");
    assert!(stdin.starts_with("#!/bin/bash\n") && stdin.contains("#SBATCH --nodes=32"));

    // With `--output`: sbatch is given the file.
    let out = run(&["--submit", "--output", "job.sbatch"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read("sbatch.args"), "--parsable\njob.sbatch\n");
    assert_eq!(read("job.sbatch"), stdin, "the same script either way");

    let out = run(&["--submit"], true);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert_eq!(
        stderr(&out),
        "error: `sbatch` failed (exit status: 1)\n  caused by: sbatch: error: Batch job \
         submission failed: Invalid partition name specified\n"
    );
}

// ---------------------------------------------------------------------------------------
// Real jobs on a local Slurm cluster of two emulated nodes.

/// A stand-in for `cohort launch`, written into the cluster's directory: every task
/// records its arguments, `COHORT_JOB_TOKEN_FILE`, that file's mode, `SLURM_PROCID` and
/// its node in `<results>/<job id>/task.<rank>`, marks itself started, then sleeps `ticks` tenths
/// of a second and exits `code`. With `on_usr1`, USR1 makes it record `usr1`, exit 0.
fn stand_in(dir: &Path, on_usr1: bool, ticks: u32, code: u8) -> PathBuf {
    let trap = if on_usr1 {
        "trap 'echo usr1 >> \"$out\"; exit 0' USR1"
    } else {
        ""
    };
    let script = format!(
        r#"#!/bin/bash
set -u
results= prev=
for a in "$@"; do [ "$prev" = --results ] && results=$a; prev=$a; done
out="$results/$SLURM_JOB_ID/task.$SLURM_PROCID"
{trap}
{{
  printf 'arg=%s\n' "$@"
  echo "token_file=${{COHORT_JOB_TOKEN_FILE:-unset}}"
  echo "token_mode=$(stat -c %a "$COHORT_JOB_TOKEN_FILE")"
  echo "procid=$SLURM_PROCID"
  echo "node=$SLURMD_NODENAME"
}} > "$out"
touch "$out.started"
for _ in $(seq {ticks}); do sleep 0.1; done
echo slept >> "$out"
exit {code}
"#
    );
    let path = dir.join(if on_usr1 { "launch-usr1" } else { "launch" });
    std::fs::write(&path, script).unwrap();
    make_executable(&path);
    path
}

/// `cohort sbatch RECIPE --nodes 2 --time 10 --cohort STAND_IN --submit EXTRA…` in the
/// cluster's directory; returns the job id.
fn submit(cluster: &Cluster, stand_in: &Path, extra: &[&str]) -> u64 {
    let recipe = repo_root().join("recipes/cpu-sim-aggregated.toml");
    let out = cohort()
        .current_dir(cluster.dir())
        .env("SLURM_CONF", cluster.dir().join("slurm.conf"))
        .arg("sbatch")
        .arg(&recipe)
        .args(["--nodes", "2", "--time", "10", "--cohort"])
        .arg(stand_in)
        .arg("--submit")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cohort sbatch --submit: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    text.trim()
        .strip_prefix("submitted job ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not `submitted job <id>`: {text}"))
}

fn slurm_output(cluster: &Cluster, job: u64) -> String {
    let path = cluster.dir().join(format!("results/slurm-{job}.out"));
    std::fs::read_to_string(path).unwrap_or_default()
}

fn assert_completed(cluster: &Cluster, job: u64) {
    let state = cluster.wait(job, Duration::from_secs(30));
    assert_eq!(
        state,
        "COMPLETED",
        "job {job}; its output:\n{}\n{}",
        slurm_output(cluster, job),
        cluster.log_tail()
    );
}

/// What each task recorded, by rank.
fn task_records(results: &Path) -> Vec<String> {
    (0..2)
        .map(|rank| {
            let path = results.join(format!("task.{rank}"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

#[test]
fn a_rendered_job_runs_one_task_per_node_with_a_private_token() {
    let Some(cluster) = Cluster::up("sbatch-job", 2, 24_817) else {
        return;
    };
    let launch = stand_in(cluster.dir(), false, 5, 0);
    let job = submit(&cluster, &launch, &["--output", "job.sbatch"]);
    eprintln!("sbatch job: submitted Slurm job {job}");
    assert_completed(&cluster, job);
    eprintln!("sbatch job: Slurm job {job} COMPLETED");

    let results = cluster.dir().join(format!("results/{job}"));
    let token_file = results.join(".cohort-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64, "32 random bytes in hex: {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");

    let recipe =
        std::fs::canonicalize(repo_root().join("recipes/cpu-sim-aggregated.toml")).unwrap();
    let args = format!(
        "arg=launch\narg=--recipe\narg={}\narg=--bootstrap\narg=slurm\narg=--results\narg={}\n",
        recipe.display(),
        results.parent().unwrap().display()
    );
    let mut nodes = Vec::new();
    for (rank, record) in task_records(&results).iter().enumerate() {
        assert!(record.starts_with(&args), "task {rank}:\n{record}");
        assert!(
            record.contains(&format!("token_file={}\n", token_file.display())),
            "{record}"
        );
        assert!(record.contains("token_mode=600\n"), "{record}");
        assert!(record.contains(&format!("procid={rank}\n")), "{record}");
        assert!(record.ends_with("slept\n"), "ran to the end: {record}");
        assert!(!record.contains(&token), "the token is not in any argument");
        nodes.push(
            record
                .lines()
                .find_map(|l| l.strip_prefix("node="))
                .unwrap()
                .to_owned(),
        );
    }
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2"], "one task on each node");

    let script = std::fs::read_to_string(cluster.dir().join("job.sbatch")).unwrap();
    assert!(!script.contains(&token));
    let copy = std::fs::read_to_string(results.join("job.sbatch")).unwrap();
    assert_eq!(
        copy, script,
        "the job keeps a copy of its script with its results"
    );
    let out = slurm_output(&cluster, job);
    assert!(!out.contains(&token), "nor in the job's output:\n{out}");
}

#[test]
fn usr1_to_the_batch_shell_reaches_every_task() {
    let Some(cluster) = Cluster::up("sbatch-usr1", 2, 25_817) else {
        return;
    };
    // Sleeps 20 s and fails unless USR1 comes first.
    let launch = stand_in(cluster.dir(), true, 200, 3);
    let job = submit(&cluster, &launch, &[]);
    eprintln!("sbatch USR1: submitted Slurm job {job}");
    let results = cluster.dir().join(format!("results/{job}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..2).all(|rank| results.join(format!("task.{rank}.started")).exists()) {
        assert!(
            Instant::now() < deadline,
            "tasks of job {job} did not start; its output:\n{}\n{}",
            slurm_output(&cluster, job),
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What `--signal=B:USR1@N` does at the time limit, now: the batch shell only.
    let out = cluster
        .command("scancel")
        .args(["--signal=USR1", "--batch", &job.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "scancel: {}", stderr(&out));
    assert_completed(&cluster, job);
    eprintln!("sbatch USR1: Slurm job {job} COMPLETED after USR1");
    for (rank, record) in task_records(&results).iter().enumerate() {
        assert!(
            record.ends_with("usr1\n") && !record.contains("slept"),
            "task {rank} got USR1 from the batch shell through srun:\n{record}"
        );
    }
}
