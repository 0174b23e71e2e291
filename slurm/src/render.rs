//! `sbatch` scripts and `srun` argument lists from typed specs.
//!
//! Rendering validates what Slurm would otherwise reject at submission time (or worse,
//! misread: a newline in a `#SBATCH` value ends the directive and turns the rest into
//! shell code), and names the field at fault.

use std::fmt::Write as _;
use std::time::Duration;

/// A spec that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}; given `{value}`")]
pub struct RenderError {
    pub field: &'static str,
    pub value: String,
    pub problem: &'static str,
}

/// `--signal=[B:]SIG@SECONDS`: Slurm sends `SIG` this long before the time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Signal name without `SIG`, e.g. `USR1`.
    pub name: String,
    /// Seconds before the time limit (Slurm's resolution is about 60 s).
    pub seconds_before: u32,
    /// `B:` — deliver to the batch shell only (cohort's launcher catches it there and
    /// drains), not to every step's tasks.
    pub batch_shell_only: bool,
}

/// The resources of one (het-)job component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub nodes: u32,
    pub ntasks_per_node: Option<u32>,
    pub gpus_per_node: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub partition: Option<String>,
    /// `--segment=N`: nodes placed in blocks of N (topology/block, e.g. one NVL72 rack).
    pub segment: Option<u32>,
    pub exclusive: bool,
    /// Further `#SBATCH` options for this component, each a full option (`--mem=0`).
    pub extra: Vec<String>,
}

/// An `sbatch` script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbatchSpec {
    /// Comment lines put right after `#!/bin/bash`, each rendered as `# LINE` (say what
    /// rendered the script and from what); sbatch reads `#SBATCH` lines after them.
    pub header: Vec<String>,
    pub job_name: Option<String>,
    /// The first (or only) component; `het_groups` adds components 1, 2, ….
    pub resources: Resources,
    pub het_groups: Vec<Resources>,
    /// `--time`; `None` leaves the partition default.
    pub time: Option<Duration>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub signal: Option<Signal>,
    /// `--output`, may use `%j` (job id), `%x` (job name), `%N` (first node).
    pub output: Option<String>,
    pub error: Option<String>,
    /// The script body after the directives (shell code).
    pub body: String,
}

/// Writes a duration as Slurm's `D-HH:MM:SS`, rounding up to whole seconds.
pub fn slurm_time(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    if days > 0 {
        format!("{days}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn check_value(field: &'static str, value: &str) -> Result<(), RenderError> {
    let problem = if value.is_empty() {
        "must not be empty"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace (sbatch ends a directive's value at the first blank)"
    } else {
        return Ok(());
    };
    Err(RenderError {
        field,
        value: value.to_owned(),
        problem,
    })
}

fn positive(field: &'static str, n: u32) -> Result<(), RenderError> {
    if n == 0 {
        return Err(RenderError {
            field,
            value: "0".into(),
            problem: "must be at least 1",
        });
    }
    Ok(())
}

fn directive(out: &mut String, option: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "#SBATCH --{option}={value}");
}

fn render_resources(out: &mut String, r: &Resources) -> Result<(), RenderError> {
    positive("nodes", r.nodes)?;
    if let Some(segment) = r.segment.filter(|s| *s > 0 && !r.nodes.is_multiple_of(*s)) {
        // sbatch refuses this at submission ("node count must be a multiple of the
        // segment size"); say so before the job waits in a queue to be refused.
        return Err(RenderError {
            field: "segment",
            value: format!("{segment} (nodes {})", r.nodes),
            problem: "must divide the node count",
        });
    }
    directive(out, "nodes", r.nodes);
    let counts = [
        ("ntasks-per-node", r.ntasks_per_node),
        ("gpus-per-node", r.gpus_per_node),
        ("cpus-per-task", r.cpus_per_task),
        ("segment", r.segment),
    ];
    for (option, value) in counts {
        if let Some(n) = value {
            positive(option_field(option), n)?;
            directive(out, option, n);
        }
    }
    if let Some(p) = &r.partition {
        check_value("partition", p)?;
        directive(out, "partition", p);
    }
    if r.exclusive {
        let _ = writeln!(out, "#SBATCH --exclusive");
    }
    for extra in &r.extra {
        if !extra.starts_with('-') || extra.contains(['\n', '\r']) {
            return Err(RenderError {
                field: "extra",
                value: extra.clone(),
                problem: "must be one option starting with `-`, on one line",
            });
        }
        let _ = writeln!(out, "#SBATCH {extra}");
    }
    Ok(())
}

/// Maps an option name to the spec field that holds it, for error messages.
fn option_field(option: &str) -> &'static str {
    match option {
        "ntasks-per-node" => "ntasks_per_node",
        "gpus-per-node" => "gpus_per_node",
        "cpus-per-task" => "cpus_per_task",
        "segment" => "segment",
        _ => "nodes",
    }
}

impl SbatchSpec {
    /// Renders the script: `#!/bin/bash`, job-wide directives, the first component's
    /// resources, each het-job component after a `#SBATCH hetjob` line, then the body.
    pub fn render(&self) -> Result<String, RenderError> {
        let mut out = String::from("#!/bin/bash\n");
        for line in self.header.iter().flat_map(|h| h.lines()) {
            // Every line commented: a header cannot become a directive or shell code.
            let _ = writeln!(out, "#{}{line}", if line.is_empty() { "" } else { " " });
        }
        if let Some(name) = &self.job_name {
            check_value("job_name", name)?;
            directive(&mut out, "job-name", name);
        }
        if let Some(time) = self.time {
            if time.is_zero() {
                let value = "0s".into();
                return Err(RenderError {
                    field: "time",
                    value,
                    problem: "must be positive",
                });
            }
            directive(&mut out, "time", slurm_time(time));
        }
        for (field, value) in [
            ("account", &self.account),
            ("qos", &self.qos),
            ("output", &self.output),
            ("error", &self.error),
        ] {
            if let Some(v) = value {
                check_value(field, v)?;
                directive(&mut out, field, v);
            }
        }
        if let Some(sig) = &self.signal {
            check_value("signal.name", &sig.name)?;
            if !sig.name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(RenderError {
                    field: "signal.name",
                    value: sig.name.clone(),
                    problem: "must be a signal name such as `USR1` or a number",
                });
            }
            let scope = if sig.batch_shell_only { "B:" } else { "" };
            directive(
                &mut out,
                "signal",
                format_args!("{scope}{}@{}", sig.name, sig.seconds_before),
            );
        }
        render_resources(&mut out, &self.resources)?;
        for group in &self.het_groups {
            out.push_str("#SBATCH hetjob\n");
            render_resources(&mut out, group)?;
        }
        out.push('\n');
        out.push_str(&self.body);
        if !self.body.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    }
}

/// Quotes one word for a POSIX shell: unchanged when it has only characters no shell
/// treats specially (`/usr/bin/cohort`, `--nodes=4`), otherwise in single quotes, with
/// each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    // `NAME=value` as a command's first word would be read as an assignment.
    let assignment = word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if !word.is_empty() && word.chars().all(plain) && !assignment {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Quotes every word (see [`shell_quote`]) and joins them with spaces: a command line
/// the shell splits back into exactly these words.
pub fn shell_words<S: AsRef<str>>(words: &[S]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| shell_quote(w.as_ref())).collect();
    quoted.join(" ")
}

/// An `srun` invocation inside an allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrunSpec {
    pub nodes: Option<u32>,
    pub ntasks: Option<u32>,
    pub ntasks_per_node: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// `--mpi=pmix` for MPI bootstrap; `None` leaves the cluster default.
    pub mpi: Option<String>,
    /// `--cpu-bind`; `none` stops srun binding the launcher task (cohort binds engines).
    pub cpu_bind: Option<String>,
    /// `--het-group`, for het jobs.
    pub het_group: Option<u32>,
    /// `--kill-on-bad-exit=1`: one task failing ends the step instead of hanging.
    pub kill_on_bad_exit: bool,
    /// `--overlap`: share the allocation's resources with other steps.
    pub overlap: bool,
    /// `--label`: prefix output lines with the task rank.
    pub label: bool,
    /// Further options, each complete (`--export=ALL`).
    pub extra: Vec<String>,
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl SrunSpec {
    /// The argument list, starting with `srun`.
    pub fn args(&self) -> Result<Vec<String>, RenderError> {
        let mut args = vec!["srun".to_owned()];
        let counts = [
            ("nodes", self.nodes),
            ("ntasks", self.ntasks),
            ("ntasks-per-node", self.ntasks_per_node),
            ("cpus-per-task", self.cpus_per_task),
        ];
        for (option, value) in counts {
            if let Some(n) = value {
                positive(option_field(option), n)?;
                args.push(format!("--{option}={n}"));
            }
        }
        if let Some(g) = self.het_group {
            args.push(format!("--het-group={g}"));
        }
        for (field, value) in [("mpi", &self.mpi), ("cpu-bind", &self.cpu_bind)] {
            if let Some(v) = value {
                check_value(if field == "mpi" { "mpi" } else { "cpu_bind" }, v)?;
                args.push(format!("--{field}={v}"));
            }
        }
        let flags = [
            (self.kill_on_bad_exit, "--kill-on-bad-exit=1"),
            (self.overlap, "--overlap"),
            (self.label, "--label"),
        ];
        args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| (*f).to_owned()),
        );
        args.extend(self.extra.iter().cloned());
        if self.command.is_empty() {
            return Err(RenderError {
                field: "command",
                value: String::new(),
                problem: "must name the program to run",
            });
        }
        args.extend(self.command.iter().cloned());
        Ok(args)
    }
}

#[cfg(test)]
mod tests;
