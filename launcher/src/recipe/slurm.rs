//! `[slurm]`: what `cohort sbatch` asks Slurm for — nodes, GPUs, time, partition — and
//! how the job script behaves (the drain signal, the output file, extra directives and
//! environment). Every key is optional; the command line overrides the scheduling ones.
//!
//! Checked like the rest of the recipe: unknown keys, malformed times and impossible
//! combinations are errors with the file, line and key. What depends on the command
//! line (the node count when `--nodes` is given) is checked again by `cohort sbatch`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Deploy, RecipeError, Shape};

/// `[slurm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slurm {
    /// Nodes to allocate. Default: computed from `[deploy]` when every role gives a
    /// `count` and `gpus_per_node` is set (see [`required_nodes`]); otherwise required
    /// here or as `--nodes`. The recipe's emulated topology is not the allocation.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// GPUs per node, asked for as `--gpus-per-node`. Default 0: no GPU request (for
    /// sites that allocate whole nodes, and for the simulator).
    #[serde(default)]
    pub gpus_per_node: u32,
    /// Time limit in Slurm's format (`30`, `4:00:00`, `1-12`). Default: the
    /// partition's.
    #[serde(default)]
    pub time: Option<String>,
    /// `--partition`. Default: the cluster's.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--account`. Default: the user's.
    #[serde(default)]
    pub account: Option<String>,
    /// `--qos`. Default: the account's.
    #[serde(default)]
    pub qos: Option<String>,
    /// `--segment=N` (Slurm 24.05+, topology/block): nodes in blocks of N, each block
    /// inside one NVLink domain on NVL72 (`segment = 18` keeps a whole rack together).
    /// Must divide `nodes`. Default: none.
    #[serde(default)]
    pub segment: Option<u32>,
    /// Seconds before the time limit that Slurm sends `USR1` to the batch shell, which
    /// forwards it to `cohort launch` to drain and write results. Slurm may send it up to
    /// 60 s earlier. Default 300.
    #[serde(default = "default_signal_before_s")]
    pub signal_before_s: u32,
    /// Slurm's output file, relative to the job's working directory; `%j` is the job id.
    /// Its directory must exist when the job starts (Slurm does not create it), so it may
    /// not use `%` patterns. Default `<results>/slurm-%j.out`.
    #[serde(default)]
    pub output: Option<String>,
    /// `--exclusive`: no other job shares the nodes. Default false.
    #[serde(default)]
    pub exclusive: bool,
    /// Further `#SBATCH` options, each one complete option (`--mem=0`,
    /// `--constraint=gb200`). Options cohort writes itself are refused here.
    #[serde(default)]
    pub extra: Vec<String>,
    /// Variables exported by the job script before `srun`, so every rank sees them.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The default of `slurm.signal_before_s`, in seconds.
pub const DEFAULT_SIGNAL_BEFORE_S: u32 = 300;

fn default_signal_before_s() -> u32 {
    DEFAULT_SIGNAL_BEFORE_S
}

impl Default for Slurm {
    fn default() -> Self {
        Self {
            nodes: None,
            gpus_per_node: 0,
            time: None,
            partition: None,
            account: None,
            qos: None,
            segment: None,
            signal_before_s: DEFAULT_SIGNAL_BEFORE_S,
            output: None,
            exclusive: false,
            extra: Vec::new(),
            env: BTreeMap::new(),
        }
    }
}

/// `sbatch` options that `cohort sbatch` writes itself, and where to set each instead.
const MANAGED: &[(&str, &str)] = &[
    ("--job-name", "the recipe's `name` or `--job-name`"),
    ("--nodes", "`slurm.nodes` or `--nodes`"),
    ("--ntasks", "nothing: cohort runs one task per node"),
    (
        "--ntasks-per-node",
        "nothing: cohort runs one task per node",
    ),
    ("--gpus-per-node", "`slurm.gpus_per_node`"),
    ("--time", "`slurm.time` or `--time`"),
    ("--partition", "`slurm.partition` or `--partition`"),
    ("--account", "`slurm.account` or `--account`"),
    ("--qos", "`slurm.qos` or `--qos`"),
    ("--segment", "`slurm.segment`"),
    ("--exclusive", "`slurm.exclusive`"),
    ("--signal", "`slurm.signal_before_s`"),
    ("--output", "`slurm.output`"),
];

/// Variables the job script sets itself.
const RESERVED_ENV: &[&str] = &["COHORT_JOB_TOKEN", "COHORT_JOB_TOKEN_FILE"];

/// The longest `--signal` lead time Slurm accepts, in seconds.
const MAX_SIGNAL_BEFORE_S: u32 = 65_535;

/// A time limit that is not in Slurm's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    /// The text given.
    pub given: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; given `{}`", self.problem, self.given)
    }
}

impl std::error::Error for TimeError {}

/// Parses a Slurm time limit: `MINUTES`, `MINUTES:SECONDS`, `HOURS:MINUTES:SECONDS`,
/// `DAYS-HOURS`, `DAYS-HOURS:MINUTES` or `DAYS-HOURS:MINUTES:SECONDS` (sbatch(1),
/// `--time`). Stricter than Slurm: a zero or unlimited limit is refused (cohort signals
/// the job before its limit), and minutes and seconds after a `:` must be below 60.
pub fn parse_time(text: &str) -> Result<Duration, TimeError> {
    let fail = |problem: &str| TimeError {
        given: text.to_owned(),
        problem: problem.to_owned(),
    };
    let format = "must be a Slurm time: `MINUTES`, `MINUTES:SECONDS`, `HOURS:MINUTES:SECONDS`, \
                  `DAYS-HOURS`, `DAYS-HOURS:MINUTES` or `DAYS-HOURS:MINUTES:SECONDS`";
    let t = text.trim();
    if ["infinite", "unlimited"].contains(&t.to_ascii_lowercase().as_str()) {
        return Err(fail(
            "must be a finite limit: cohort signals the job before it ends; leave it out \
             for the partition's default",
        ));
    }
    let number = |s: &str| -> Result<u64, TimeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(format));
        }
        s.parse().map_err(|_| fail("is too large"))
    };
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, t),
    };
    let parts: Vec<u64> = clock.split(':').map(number).collect::<Result<_, _>>()?;
    // (hours, minutes, seconds); which parts are bounded depends on the form.
    let (h, m, s, bounded): (u64, u64, u64, &[u64]) = match (days, parts.as_slice()) {
        (None, [m]) => (0, *m, 0, &[]),
        (None, [m, s]) => (0, *m, *s, &[*s]),
        (None, [h, m, s]) => (*h, *m, *s, &[*m, *s]),
        (Some(_), [h]) => (*h, 0, 0, &[]),
        (Some(_), [h, m]) => (*h, *m, 0, &[*m]),
        (Some(_), [h, m, s]) => (*h, *m, *s, &[*m, *s]),
        _ => return Err(fail(format)),
    };
    if bounded.iter().any(|v| *v >= 60) || (days.is_some() && h >= 24) {
        return Err(fail(
            "has minutes or seconds of 60 or more after a `:` (or hours of 24 or more after \
             `DAYS-`)",
        ));
    }
    let secs = days.unwrap_or(0) * 86_400 + h * 3600 + m * 60 + s;
    if secs == 0 {
        return Err(fail(
            "must be positive (Slurm reads 0 as no limit); leave it out for the \
             partition's default",
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// How many nodes a recipe's `[deploy]` needs, and how that was worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCount {
    /// Nodes.
    pub nodes: u32,
    /// One line for people: `16 prefill × 4 GPUs + 8 decode × 8 GPUs on 4 GPUs per node`.
    pub reason: String,
}

/// The nodes `[deploy]` needs with `gpus_per_node` GPUs each, when every role gives a
/// `count`: an instance of more GPUs than a node has takes whole nodes (the planner puts
/// it on adjacent nodes), smaller ones are packed first-fit, largest first (the planner
/// keeps each on one node). `Err` says why it cannot be worked out: then `nodes` must be
/// given.
pub fn required_nodes(deploy: &Deploy, gpus_per_node: u32) -> Result<NodeCount, String> {
    let roles: Vec<(&str, &Shape)> = [
        ("prefill", &deploy.prefill),
        ("decode", &deploy.decode),
        ("aggregated", &deploy.aggregated),
    ]
    .into_iter()
    .filter_map(|(name, s)| Some((name, s.as_ref()?)))
    .collect();
    if let Some((name, _)) = roles.iter().find(|(_, s)| s.count.is_none()) {
        return Err(format!(
            "`deploy.{name}` gives `per_domain`, so the node count depends on the NVLink \
             domains of the allocation"
        ));
    }
    if gpus_per_node == 0 {
        return Err(
            "`slurm.gpus_per_node` is not set, so `[deploy]` cannot be turned \
                    into nodes"
                .to_owned(),
        );
    }
    let mut whole_nodes: u64 = 0;
    let mut small: Vec<u32> = Vec::new();
    let mut parts = Vec::new();
    for (name, s) in &roles {
        let count = s.count.unwrap_or(0);
        parts.push(format!(
            "{count} {name} × {} GPU{}",
            s.gpus,
            if s.gpus == 1 { "" } else { "s" }
        ));
        if s.gpus > gpus_per_node {
            whole_nodes += u64::from(count) * u64::from(s.gpus.div_ceil(gpus_per_node));
        } else {
            small.extend(std::iter::repeat_n(s.gpus, count as usize));
        }
    }
    small.sort_unstable_by(|a, b| b.cmp(a));
    let mut free: Vec<u32> = Vec::new();
    for gpus in small {
        match free.iter_mut().find(|f| **f >= gpus) {
            Some(f) => *f -= gpus,
            None => free.push(gpus_per_node - gpus),
        }
    }
    let nodes = whole_nodes + free.len() as u64;
    let nodes = u32::try_from(nodes).map_err(|_| format!("`[deploy]` needs {nodes} nodes"))?;
    Ok(NodeCount {
        nodes,
        reason: format!("{} on {gpus_per_node} GPUs per node", parts.join(" + ")),
    })
}

/// Checks `[slurm]`; `file` and `text` locate errors.
pub(crate) fn validate(file: &str, text: &str, s: &Slurm) -> Result<(), RecipeError> {
    let err =
        |key: &str, message: String| Err(RecipeError::at_key(file, text, "slurm", key, message));
    if s.nodes == Some(0) {
        return err(
            "nodes",
            "`slurm.nodes` must be at least 1; given 0".to_owned(),
        );
    }
    if let Some(t) = &s.time {
        match parse_time(t) {
            Err(e) => return err("time", format!("`slurm.time` {e}")),
            Ok(limit) if u64::from(s.signal_before_s) >= limit.as_secs() => {
                return err(
                    "signal_before_s",
                    format!(
                        "`slurm.signal_before_s` ({} s) must be shorter than `slurm.time` \
                         ({t}, {} s)",
                        s.signal_before_s,
                        limit.as_secs()
                    ),
                )
            }
            Ok(_) => {}
        }
    }
    if !(1..=MAX_SIGNAL_BEFORE_S).contains(&s.signal_before_s) {
        return err(
            "signal_before_s",
            format!(
                "`slurm.signal_before_s` must be between 1 and {MAX_SIGNAL_BEFORE_S} \
                 (Slurm's limit); given {}",
                s.signal_before_s
            ),
        );
    }
    for (key, value) in [
        ("partition", &s.partition),
        ("account", &s.account),
        ("qos", &s.qos),
        ("output", &s.output),
    ] {
        if let Some(v) = value {
            if let Some(problem) = directive_value_problem(v) {
                return err(key, format!("`slurm.{key}` {problem}; given `{v}`"));
            }
        }
    }
    if let Some(o) = &s.output {
        if let Some(problem) = output_problem(o) {
            return err("output", format!("`slurm.output` {problem}; given `{o}`"));
        }
    }
    match (s.segment, s.nodes) {
        (Some(0), _) => {
            return err(
                "segment",
                "`slurm.segment` must be at least 1; given 0".to_owned(),
            )
        }
        (Some(seg), Some(n)) if !n.is_multiple_of(seg) => {
            return err(
                "segment",
                format!("`slurm.segment` must divide `slurm.nodes` ({n}); given {seg}"),
            )
        }
        _ => {}
    }
    for option in &s.extra {
        if let Some(problem) = extra_problem(option) {
            return err("extra", format!("`slurm.extra` item `{option}` {problem}"));
        }
    }
    for (name, value) in &s.env {
        let message = if !is_env_name(name) {
            format!(
                "`slurm.env` key `{name}` is not a variable name (letters, digits and `_`, \
                 not starting with a digit)"
            )
        } else if RESERVED_ENV.contains(&name.as_str()) {
            format!(
                "`slurm.env.{name}` is set by the job script itself (the token is written to \
                 a file, never into the script)"
            )
        } else if value.contains('\0') {
            format!("`slurm.env.{name}` must not contain a NUL character")
        } else {
            continue;
        };
        return Err(RecipeError::at_key(file, text, "slurm.env", name, message));
    }
    Ok(())
}

/// Why a value cannot follow `#SBATCH --option=`, if it cannot.
pub(crate) fn directive_value_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        Some("must not be empty")
    } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain blanks (sbatch ends a directive's value at the first one)")
    } else {
        None
    }
}

/// Why an output file pattern cannot work, if it cannot: Slurm opens it before the
/// script runs and creates no directories, so a `%j` directory never exists in time
/// (the job fails with `JobLaunchFailure`, exit code 0:53).
pub(crate) fn output_problem(o: &str) -> Option<&'static str> {
    let dir = o.rsplit_once('/').map_or("", |(d, _)| d);
    dir.contains('%').then_some(
        "may not use `%` patterns in its directory: Slurm opens the file before the job \
         starts and creates no directories; put the pattern in the file name",
    )
}

/// Why an `extra` option cannot be used, if it cannot.
fn extra_problem(option: &str) -> Option<String> {
    if !option.starts_with("--") || option.len() < 3 {
        return Some("must be one long option starting with `--` (`--mem=0`)".to_owned());
    }
    if option.chars().any(char::is_control) {
        return Some("must be on one line".to_owned());
    }
    let name = option.split(['=', ' ']).next().unwrap_or(option);
    MANAGED
        .iter()
        .find(|(managed, _)| *managed == name)
        .map(|(_, instead)| format!("is written by `cohort sbatch` itself; set {instead}"))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse;

    const BASE: &str = r#"name = "r1"

[model]
name = "m"

[engine]
kind = "sim"

[deploy]
mode = "disaggregated"

[deploy.prefill]
gpus = 4
count = 16

[deploy.decode]
gpus = 8
count = 8

[slurm]
gpus_per_node = 4
"#;

    fn with(extra: &str) -> Result<crate::recipe::Recipe, RecipeError> {
        parse("r.toml", &format!("{BASE}{extra}"))
    }

    fn err(extra: &str) -> String {
        with(extra).unwrap_err().to_string()
    }

    #[test]
    fn keys_and_defaults() {
        let r = with(
            "nodes = 36\ntime = \"4:00:00\"\npartition = \"gb200\"\nsegment = 18\n\
             exclusive = true\nextra = [\"--mem=0\"]\n[slurm.env]\nNCCL_DEBUG = \"WARN\"\n",
        )
        .unwrap();
        let s = r.slurm.unwrap();
        assert_eq!(s.nodes, Some(36));
        assert_eq!(s.signal_before_s, 300);
        assert_eq!(s.output, None);
        assert!(s.exclusive);
        assert_eq!(s.env["NCCL_DEBUG"], "WARN");
        let empty = parse("r.toml", &BASE.replace("gpus_per_node = 4\n", "")).unwrap();
        assert_eq!(empty.slurm, Some(Slurm::default()));
    }

    #[test]
    fn unknown_key_is_located_with_a_suggestion() {
        assert_eq!(
            err("partiton = \"gb200\"\n"),
            "r.toml:22:1: unknown key `partiton` in `[slurm]` (value `\"gb200\"`); \
             did you mean \"partition\"?"
        );
    }

    #[test]
    fn bad_time_format_is_located() {
        let e = err("time = \"4h\"\n");
        assert!(
            e.starts_with("r.toml:22:1: `slurm.time` must be a Slurm time: `MINUTES`"),
            "{e}"
        );
        assert!(e.ends_with("given `4h`"), "{e}");
        assert!(err("time = \"1:75\"\n").contains("60 or more"));
        assert!(err("time = \"0\"\n").contains("must be positive"));
        assert!(err("time = \"UNLIMITED\"\n").contains("finite"));
        let e = err("time = \"5\"\n");
        assert!(
            e.contains(
                "`slurm.signal_before_s` (300 s) must be shorter than `slurm.time` (5, 300 s)"
            ),
            "{e}"
        );
    }

    #[test]
    fn slurm_time_forms() {
        let secs = |t: &str| parse_time(t).unwrap().as_secs();
        assert_eq!(secs("30"), 30 * 60);
        assert_eq!(secs("30:15"), 30 * 60 + 15);
        assert_eq!(secs("4:00:00"), 4 * 3600);
        assert_eq!(secs("48:00:00"), 48 * 3600);
        assert_eq!(secs("1-12"), 36 * 3600);
        assert_eq!(secs("1-0:30"), 86_400 + 1800);
        assert_eq!(secs("2-01:02:03"), 2 * 86_400 + 3723);
        for bad in [
            "",
            "-1",
            "1-",
            "1:2:3:4",
            "1-2:3:4:5",
            "a",
            "1h",
            "1-24",
            "1.5",
            " : ",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segment_must_divide_nodes() {
        assert_eq!(
            err("nodes = 32\nsegment = 18\n"),
            "r.toml:23:1: `slurm.segment` must divide `slurm.nodes` (32); given 18"
        );
        assert!(with("nodes = 36\nsegment = 18\n").is_ok());
        assert!(err("segment = 0\n").contains("at least 1"));
    }

    #[test]
    fn extra_and_env_are_checked() {
        assert!(err("extra = [\"mem=0\"]\n").contains("starting with `--`"));
        assert_eq!(
            err("extra = [\"--time=10\"]\n"),
            "r.toml:22:1: `slurm.extra` item `--time=10` is written by `cohort sbatch` \
             itself; set `slurm.time` or `--time`"
        );
        assert!(err("extra = [\"--ntasks-per-node=4\"]\n").contains("one task per node"));
        assert!(with("extra = [\"--mem=0\", \"--constraint=gb200\"]\n").is_ok());
        let e = err("[slurm.env]\nCOHORT_JOB_TOKEN = \"abc\"\n");
        assert!(
            e.starts_with("r.toml:23:1: `slurm.env.COHORT_JOB_TOKEN` is set by"),
            "{e}"
        );
        assert!(err("[slurm.env]\n\"1X\" = \"a\"\n").contains("not a variable name"));
    }

    #[test]
    fn values_that_break_directives_or_slurm() {
        assert!(err("partition = \"a b\"\n").contains("must not contain blanks"));
        assert!(err("qos = \"\"\n").contains("must not be empty"));
        let e = err("output = \"results/%j/slurm.out\"\n");
        assert!(
            e.contains("may not use `%` patterns in its directory"),
            "{e}"
        );
        assert!(with("output = \"logs/%x-%j.out\"\n").is_ok());
        assert!(err("signal_before_s = 0\n").contains("between 1 and 65535"));
        assert!(err("nodes = 0\n").contains("at least 1"));
    }

    #[test]
    fn nodes_from_deploy() {
        let r = with("").unwrap();
        let n = required_nodes(&r.deploy, 4).unwrap();
        assert_eq!(n.nodes, 32, "16×4 + 8×8 GPUs on 4-GPU nodes");
        assert_eq!(
            n.reason,
            "16 prefill × 4 GPUs + 8 decode × 8 GPUs on 4 GPUs per node"
        );
        // 8-GPU nodes: the 4-GPU prefill instances pair up, the decode take one each.
        assert_eq!(required_nodes(&r.deploy, 8).unwrap().nodes, 16);
        // 6-GPU nodes: a 4-GPU instance leaves 2 GPUs no other instance fits in; an
        // 8-GPU instance takes two whole nodes.
        assert_eq!(required_nodes(&r.deploy, 6).unwrap().nodes, 16 + 16);
        assert!(required_nodes(&r.deploy, 0)
            .unwrap_err()
            .contains("gpus_per_node"));
        let per_domain = parse(
            "r.toml",
            &BASE
                .replace("count = 16", "per_domain = 2")
                .replace("count = 8", "per_domain = 1"),
        )
        .unwrap();
        let e = required_nodes(&per_domain.deploy, 4).unwrap_err();
        assert!(e.contains("`deploy.prefill` gives `per_domain`"), "{e}");
    }

    #[test]
    fn small_instances_pack_first_fit() {
        let text = BASE
            .replace("mode = \"disaggregated\"", "mode = \"aggregated\"")
            .replace(
                "[deploy.prefill]\ngpus = 4\ncount = 16\n\n[deploy.decode]\ngpus = 8\ncount = 8\n",
                "[deploy.aggregated]\ngpus = 3\ncount = 5\n",
            );
        let r = parse("r.toml", &text).unwrap();
        assert_eq!(
            required_nodes(&r.deploy, 4).unwrap().nodes,
            5,
            "one 3-GPU instance per 4-GPU node"
        );
        assert_eq!(
            required_nodes(&r.deploy, 8).unwrap().nodes,
            3,
            "two per 8-GPU node"
        );
    }
}
