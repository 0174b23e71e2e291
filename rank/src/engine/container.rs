//! Engines started from container images: pyxis (`srun --container-image …`), enroot
//! (`enroot start …`) and Apptainer (`apptainer exec …`).
//!
//! [`wrap`] turns the [`LaunchSpec`] an engine adapter made into the runtime's command
//! line, and [`Contained`] is an [`Engine`] that does so for every instance of an inner
//! engine. Nothing here runs a runtime: the supervisor starts the wrapped command like a
//! bare engine, with its sanitised environment, log file, process group and TERM → grace
//! → KILL. `docs/containers.md` shows the exact command each runtime gets.
//!
//! | what the engine needs | how it gets into the container |
//! |---|---|
//! | its GPUs and environment | `/usr/bin/env K=V … PROGRAM ARGS` run inside the container, with exactly the variables the supervisor gives a bare engine ([`inside_command`]) |
//! | host variables named in `env` | by name, never by value on a command line: pyxis `--container-env`, enroot `--env NAME`, Apptainer `APPTAINERENV_NAME` |
//! | the model directory, the results directory | bind-mounted at the same path (read-only, read-write) unless a listed mount covers them |
//! | its ports, NIXL side channel, KV events | nothing to do: all three runtimes share the host's network namespace by default, and cohort adds no isolation flag |
//! | CPU and memory binding | enroot, Apptainer: inherited from the supervisor's spawn (affinity, `numactl`); pyxis: `--cpu-bind`/`--mem-bind` on the step, which slurmstepd starts |
//! | its log | the runtime's stdout and stderr are the engine's |
//!
//! Flags follow pyxis 0.20 (`args.c`), enroot 3.5 (`enroot.in`, `src/runtime.sh`,
//! `doc/cmd/start.md`), Apptainer 1.4 (`apptainer exec --help`, the user guide's
//! "Environment and Metadata") and srun(1) of Slurm 25.05, each cited where used.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::supervisor::child_env;
use super::{Endpoints, Engine, EngineContext, Handshake, InstanceSpec, LaunchSpec};

/// The program that sets the engine's environment inside the container and then
/// `exec`s it: coreutils' (or busybox's) `env`, at the path every distribution's image
/// has it (the one `#!/usr/bin/env` lines rely on).
pub const ENV_PROGRAM: &str = "/usr/bin/env";

/// The runtime that starts the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `srun --container-image …`: the engine is a Slurm step of its own (NVIDIA's SPANK
    /// plugin over enroot).
    Pyxis,
    /// `enroot start …`: the engine is a child of the supervisor, in its own user and
    /// mount namespaces.
    Enroot,
    /// `apptainer exec …` (Singularity's successor).
    Apptainer,
}

impl Runtime {
    /// The name as recipes write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pyxis => "pyxis",
            Self::Enroot => "enroot",
            Self::Apptainer => "apptainer",
        }
    }

    /// Options cohort sets itself; `args` may not repeat them (a second value would
    /// conflict or silently win). Long options also match `--opt=value`, short ones an
    /// attached value (`-B/src`).
    fn owned_options(self) -> &'static [&'static str] {
        match self {
            Self::Pyxis => &[
                "--container-image",
                "--container-mounts",
                "--container-env",
                "--container-writable",
                "--container-readonly",
                "--container-mount-home",
                "--no-container-mount-home",
                "--container-entrypoint",
                "--no-container-entrypoint",
                "--nodelist",
                "-w",
                "--nodes",
                "-N",
                "--ntasks",
                "-n",
                "--cpu-bind",
                "--mem-bind",
                "--export",
                "--jobid",
            ],
            Self::Enroot => &["--mount", "-m", "--env", "-e", "--rw", "-w"],
            Self::Apptainer => &[
                "--bind",
                "-B",
                "--env",
                "--cleanenv",
                "-e",
                "--nv",
                "--no-home",
                "--writable-tmpfs",
            ],
        }
    }
}

/// `[engine.container]`: the image the engines run from, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// `pyxis`, `enroot` or `apptainer`. Required.
    pub runtime: Runtime,
    /// The image. Required. pyxis: an enroot reference `[USER@][REGISTRY#]IMAGE[:TAG]`
    /// (`nvcr.io#nvidia/tritonserver:25.01-trtllm-python-py3`) or an absolute `.sqsh`
    /// path; enroot: an absolute `.sqsh` path or the name of a container made with
    /// `enroot create`; Apptainer: an absolute `.sif` (or sandbox directory) path, or a
    /// `docker://`, `oras://` or `library://` reference.
    pub image: String,
    /// Bind mounts, `SRC:DST` or `SRC:DST:ro` (read-write unless `ro`), both absolute,
    /// no `,`, `:` or blanks inside a path. Default none. The model directory (when the
    /// model is an absolute path) and the job's results directory are mounted at their
    /// own paths unless one of these covers them.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Names of host variables to pass in (`HF_TOKEN`), by name: their values never
    /// appear on a command line. Default none.
    #[serde(default)]
    pub env: Vec<String>,
    /// Ask for a writable root filesystem (pyxis `--container-writable`, enroot `--rw`,
    /// Apptainer `--writable-tmpfs`); what is written is lost when the engine exits.
    /// Default `false`: the runtime's own configuration decides (often read-only).
    #[serde(default)]
    pub writable: bool,
    /// Further runtime options, after cohort's and before the image (pyxis: before the
    /// command), as separate words: `["--container-name=vllm"]`, `["--rc", "/x/rc.sh"]`.
    /// Default none. Options cohort sets itself are refused.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A value of [`Container`] or [`ContainerHost`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}; given `{value}`")]
pub struct ContainerError {
    /// The key at fault: `image`, `mounts`, `env`, `args`, or the host's `node` /
    /// `results_dir`.
    pub field: &'static str,
    /// The value given (one entry of a list).
    pub value: String,
    /// What is wrong, and what would be right.
    pub problem: String,
}

impl ContainerError {
    fn new(field: &'static str, value: &str, problem: impl Into<String>) -> Self {
        Self {
            field,
            value: value.to_owned(),
            problem: problem.into(),
        }
    }
}

/// One bind mount, parsed from `SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host path.
    pub src: String,
    /// The path inside the container.
    pub dst: String,
    /// `ro`: the engine cannot write it.
    pub read_only: bool,
}

impl FromStr for Mount {
    type Err = ContainerError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ContainerError::new(
                "mounts",
                text,
                "entries are `SRC:DST` or `SRC:DST:ro`, both absolute paths without `,`, `:` \
                 or blanks (`/lustre/models:/models:ro`)",
            )
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (src, dst, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            _ => return Err(bad()),
        };
        if !mountable(src) || !mountable(dst) {
            return Err(bad());
        }
        Ok(Self {
            src: src.to_owned(),
            dst: dst.to_owned(),
            read_only,
        })
    }
}

/// An absolute path that every runtime's mount syntax can carry: pyxis and Apptainer
/// split their lists at `,`, all three split an entry at `:`, and enroot refuses blanks
/// (`src/runtime.sh`: `^[^[:space:]]+:[^[:space:]]+$`).
fn mountable(path: &str) -> bool {
    path.starts_with('/')
        && !path
            .chars()
            .any(|c| c == ',' || c == ':' || c.is_whitespace() || c.is_control())
}

/// A variable name as POSIX shells and enroot (`^[[:alpha:]_][[:alnum:]_]*`) accept it.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Container {
    /// Checks every field, so that a recipe fails at load time and not on the node; the
    /// error names the field, the value and what would be right.
    pub fn check(&self) -> Result<(), ContainerError> {
        self.check_image()?;
        self.parsed_mounts()?;
        let mut seen = BTreeSet::new();
        for name in &self.env {
            if !is_env_name(name) {
                return Err(ContainerError::new(
                    "env",
                    name,
                    "entries are names of host variables (letters, digits and `_`, not \
                     starting with a digit), whose values are passed in",
                ));
            }
            if !seen.insert(name) {
                return Err(ContainerError::new("env", name, "lists a variable twice"));
            }
        }
        for arg in &self.args {
            if arg.is_empty() || arg.contains(['\n', '\r', '\0']) {
                return Err(ContainerError::new(
                    "args",
                    arg,
                    "entries are single words on one line",
                ));
            }
            let owned = self.runtime.owned_options().iter().find(|o| {
                arg == *o
                    || (o.starts_with("--") && arg.starts_with(&format!("{o}=")))
                    || (!o.starts_with("--") && arg.starts_with(*o))
            });
            if let Some(o) = owned {
                return Err(ContainerError::new(
                    "args",
                    arg,
                    format!(
                        "repeats `{o}`, which cohort sets itself for {}; use `mounts`, \
                         `env` or `writable` instead",
                        self.runtime.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_image(&self) -> Result<(), ContainerError> {
        let image = self.image.as_str();
        let hint = match self.runtime {
            Runtime::Pyxis => {
                "an enroot reference (`nvcr.io#nvidia/pytorch:25.01-py3`) or an absolute \
                 `.sqsh` path"
            }
            Runtime::Enroot => {
                "an absolute `.sqsh` path or the name of a container made with `enroot create`"
            }
            Runtime::Apptainer => {
                "an absolute `.sif` path or a `docker://`, `oras://` or `library://` reference"
            }
        };
        let bad = |problem: String| Err(ContainerError::new("image", image, problem));
        if image.trim().is_empty() {
            return bad(format!("must name the image: {hint}"));
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad(format!("must not contain blanks; write {hint}"));
        }
        let uri = image.contains("://");
        match self.runtime {
            Runtime::Pyxis if image.starts_with('.') => {
                bad(format!("is a relative path; write {hint}"))
            }
            Runtime::Enroot if uri || image.contains('#') => bad(
                "is a registry reference, which `enroot start` cannot start: import it once \
                 (`enroot import -o /shared/image.sqsh docker://nvcr.io#nvidia/…`) and give the \
                 `.sqsh` path"
                    .to_owned(),
            ),
            Runtime::Enroot if image.contains('/') && !image.starts_with('/') => {
                bad(format!("is a relative path; write {hint}"))
            }
            Runtime::Apptainer if !uri && image.contains('#') => bad(
                "is a pyxis/enroot reference; Apptainer reads `docker://nvcr.io/nvidia/…`"
                    .to_owned(),
            ),
            Runtime::Apptainer if !uri && !image.starts_with('/') => {
                bad(format!("is a relative path; write {hint}"))
            }
            _ => Ok(()),
        }
    }

    /// The listed mounts, parsed; an error names the first bad entry. Two mounts on one
    /// container path are refused: the second would hide the first.
    pub fn parsed_mounts(&self) -> Result<Vec<Mount>, ContainerError> {
        let mut out: Vec<Mount> = Vec::with_capacity(self.mounts.len());
        for text in &self.mounts {
            let m: Mount = text.parse()?;
            if out.iter().any(|o| Path::new(&o.dst) == Path::new(&m.dst)) {
                return Err(ContainerError::new(
                    "mounts",
                    text,
                    format!("mounts a second directory at `{}`", m.dst),
                ));
            }
            out.push(m);
        }
        Ok(out)
    }
}

/// What the wrapper needs to know about the node, beyond the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerHost {
    /// This node's name as Slurm knows it (`SLURMD_NODENAME`): pyxis runs the engine as
    /// a step of its own, and `--nodelist` keeps it on the node the plan chose. Required
    /// with pyxis, unused otherwise.
    pub node: Option<String>,
    /// The job's results directory, mounted read-write at its own path: TensorRT-LLM's
    /// options file (`TrtllmEngine::config_dir`, which the launcher puts under it) is
    /// written from inside the container. Default none.
    pub results_dir: Option<PathBuf>,
}

/// A checked container and host: what [`wrap`] and [`Contained`] render from.
#[derive(Debug, Clone)]
struct Wrapper {
    container: Container,
    mounts: Vec<Mount>,
    node: String,
    results_dir: Option<String>,
}

impl Wrapper {
    fn new(container: Container, host: ContainerHost) -> Result<Self, ContainerError> {
        container.check()?;
        let mounts = container.parsed_mounts()?;
        let node = match (container.runtime, host.node) {
            (_, Some(n)) if !n.is_empty() && !n.contains([',', ' ', '\t', '\n']) => n,
            (Runtime::Pyxis, n) => {
                return Err(ContainerError::new(
                    "node",
                    n.as_deref().unwrap_or(""),
                    "must be this node's Slurm name (`SLURMD_NODENAME`): pyxis starts the \
                     engine with `srun --nodelist=<node>`",
                ))
            }
            _ => String::new(),
        };
        let results_dir = match host.results_dir {
            None => None,
            Some(dir) => {
                let text = dir.display().to_string();
                if !mountable(&text) {
                    return Err(ContainerError::new(
                        "results_dir",
                        &text,
                        "must be an absolute path without `,`, `:` or blanks, to be mounted",
                    ));
                }
                Some(text)
            }
        };
        Ok(Self {
            container,
            mounts,
            node,
            results_dir,
        })
    }

    /// The instance's mounts: the automatic ones (model, results) first, so that a
    /// listed mount inside one of them lands on top of it, then the listed ones. An
    /// automatic mount is left out when a listed one covers its path: the user decided
    /// what is there.
    fn all_mounts(&self, instance: &InstanceSpec) -> Vec<Mount> {
        let covered = |path: &str, by: &[Mount]| {
            by.iter()
                .any(|m| Path::new(path).starts_with(Path::new(&m.dst)))
        };
        let mut auto: Vec<Mount> = Vec::new();
        // Weights are read, never written: read-only protects a shared copy.
        if mountable(&instance.model) {
            auto.push(Mount {
                src: instance.model.clone(),
                dst: instance.model.clone(),
                read_only: true,
            });
        }
        if let Some(dir) = &self.results_dir {
            auto.push(Mount {
                src: dir.clone(),
                dst: dir.clone(),
                read_only: false,
            });
        }
        auto.retain(|m| !covered(&m.dst, &self.mounts));
        // One inside the other: the outer first. The same path twice: once, writable.
        auto.sort_by_key(|m| (Path::new(&m.dst).components().count(), m.read_only));
        auto.dedup_by(|later, earlier| Path::new(&later.dst) == Path::new(&earlier.dst));
        auto.extend(self.mounts.iter().cloned());
        auto
    }

    fn render(&self, instance: &InstanceSpec, launch: LaunchSpec) -> LaunchSpec {
        let mounts = self.all_mounts(instance);
        let inside = inside_command(instance, launch);
        match self.container.runtime {
            Runtime::Pyxis => self.pyxis(instance, &mounts, inside),
            Runtime::Enroot => self.enroot(&mounts, inside),
            Runtime::Apptainer => self.apptainer(&mounts, inside),
        }
    }

    /// `srun … --container-image=IMAGE … /usr/bin/env K=V … PROGRAM ARGS`.
    ///
    /// The step is started by slurmstepd on `node`, not by the supervisor: the affinity
    /// and `numactl` the supervisor applies reach only the `srun` client, so the plan's
    /// binding is given to Slurm. Stopping relies on `srun` forwarding TERM to the step
    /// (srun(1), "Signals and escape sequences"); a KILL of `srun` does not end the
    /// step, which then runs until the job ends or `scancel JOB.STEP`
    /// (`docs/containers.md`, "Stopping").
    fn pyxis(&self, i: &InstanceSpec, mounts: &[Mount], inside: Vec<String>) -> LaunchSpec {
        let c = &self.container;
        let mut args: Vec<String> = vec![
            // One task on this node. srun finds the job from `SLURM_JOB_ID`, which the
            // sanitised environment keeps (`cohort_slurm::hygiene` removes only the
            // launcher task's own variables), so no `--jobid`.
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--nodelist={}", self.node),
            // srun(1), Slurm 25.05: "--overlap allows steps to share all resources (CPUs,
            // memory, and GRES) with all other steps" — the launcher's own step holds
            // the node's GPUs and CPUs. Without `--exact` or `--cpus-per-task` the step
            // is given all of the job's CPUs on the node and, by default, all its GRES
            // (`--gres`): the engine's `CUDA_VISIBLE_DEVICES` picks among them.
            "--overlap".into(),
            // An sbatch `--export=NONE` reaches this srun as `SLURM_EXPORT_ENV=NONE` and
            // would strip the variables `--container-env` names (srun(1) `--export`).
            "--export=ALL".into(),
            // srun(1) `--cpu-bind`: masks are honoured when the step has every CPU of
            // the job on the node, which it has; `none` otherwise, so that a site's
            // default binding cannot pin a one-task step to one core.
            match i.cpus.as_ref().and_then(|c| hex_mask(c.cpus())) {
                Some(mask) => format!("--cpu-bind=mask_cpu:{mask}"),
                None => "--cpu-bind=none".into(),
            },
        ];
        if let Some(mask) = hex_mask(&i.mem_nodes) {
            // srun(1) `--mem-bind=mask_mem:<list>` (needs the task/affinity plugin).
            args.push(format!("--mem-bind=mask_mem:{mask}"));
        }
        // pyxis 0.20 `args.c`: `--container-mounts=SRC:DST[:FLAGS][,…]`, flags joined
        // with `+`; pyxis adds `x-create=auto,rbind` to each.
        args.push(format!("--container-image={}", c.image));
        if !mounts.is_empty() {
            let list: Vec<String> = mounts.iter().map(plain_mount).collect();
            args.push(format!("--container-mounts={}", list.join(",")));
        }
        // The user's home over NFS brings `~/.local` site-packages and shell setup into
        // the image's Python; the engine gets only what is mounted.
        args.push("--no-container-mount-home".into());
        // Run the command itself, not the image's ENTRYPOINT with the command as its
        // arguments (`vllm/vllm-openai`'s is `vllm serve`); pyxis's own default is a site
        // setting (`execute_entrypoint`).
        args.push("--no-container-entrypoint".into());
        if c.writable {
            args.push("--container-writable".into());
        }
        if !c.env.is_empty() {
            // pyxis 0.15+: host variables are set after the entrypoint and "their
            // existing values in the image take precedence"; these names keep the
            // host's value.
            args.push(format!("--container-env={}", c.env.join(",")));
        }
        args.extend(c.args.iter().cloned());
        args.extend(inside);
        LaunchSpec {
            program: "srun".into(),
            args,
            env: Vec::new(),
        }
    }

    /// `enroot start [--rw] --mount … --env NAME … IMAGE /usr/bin/env K=V … PROGRAM ARGS`.
    ///
    /// enroot 3.5 (`enroot.in`, `src/runtime.sh`): the container is a child of the
    /// supervisor (no PID namespace), so affinity, `numactl` and the process group hold,
    /// and `exec` all the way down makes the engine the process the supervisor signals.
    fn enroot(&self, mounts: &[Mount], inside: Vec<String>) -> LaunchSpec {
        let c = &self.container;
        let mut args: Vec<String> = vec!["start".into()];
        if c.writable {
            args.push("--rw".into());
        }
        for m in mounts {
            // `--mount` is an fstab line with `:` for blanks (`doc/cmd/start.md`); the
            // options are those pyxis gives the same mount.
            let ro = if m.read_only { ",ro" } else { "" };
            args.extend([
                "--mount".into(),
                format!("{}:{}:none:x-create=auto,rbind{ro}", m.src, m.dst),
            ]);
        }
        for name in &c.env {
            // `--env NAME` without a value takes the host's (`src/runtime.sh`).
            args.extend(["--env".into(), name.clone()]);
        }
        args.extend(c.args.iter().cloned());
        args.push(c.image.clone());
        args.extend(inside);
        LaunchSpec {
            program: "enroot".into(),
            args,
            // enroot reads its settings from the environment first (`enroot.in`,
            // `config::export`): `n` turns the home mount off (`hooks/10-home.sh`) for the
            // reason pyxis gets `--no-container-mount-home`.
            env: vec![("ENROOT_MOUNT_HOME".into(), "n".into())],
        }
    }

    /// `apptainer exec --nv --cleanenv --no-home [--writable-tmpfs] --bind … IMAGE
    /// /usr/bin/env K=V … PROGRAM ARGS`.
    ///
    /// Apptainer 1.4: `--cleanenv` keeps the host's environment (modules, conda,
    /// `PYTHONPATH`) out of the image; `exec` runs the command without the image's
    /// runscript; no PID namespace unless asked for, so signals reach the engine.
    fn apptainer(&self, mounts: &[Mount], inside: Vec<String>) -> LaunchSpec {
        let c = &self.container;
        let mut args: Vec<String> = vec![
            "exec".into(),
            // The host's driver libraries and every `/dev/nvidia*`: GPU numbering inside
            // is the host's, so the plan's indices keep their meaning.
            "--nv".into(),
            "--cleanenv".into(),
            "--no-home".into(),
        ];
        if c.writable {
            // A SIF image is read-only; this overlays a tmpfs (its size is the site's
            // `sessiondir max size`).
            args.push("--writable-tmpfs".into());
        }
        for m in mounts {
            // `-B src[:dest[:opts]]`, opts `ro` or `rw`.
            args.extend(["--bind".into(), plain_mount(m)]);
        }
        args.extend(c.args.iter().cloned());
        args.push(c.image.clone());
        args.extend(inside);
        if c.env.is_empty() {
            return LaunchSpec {
                program: "apptainer".into(),
                args,
                env: Vec::new(),
            };
        }
        // `--cleanenv` drops host variables and `--env` wants values; a host variable
        // `APPTAINERENV_NAME` becomes `NAME` inside (user guide, "Environment and
        // Metadata"). A POSIX shell renames them — names are checked, so the script is
        // fixed text — and `exec`s Apptainer, so signals and the exit status stay its.
        let exports: String = c
            .env
            .iter()
            .map(|n| format!("export APPTAINERENV_{n}=\"${{{n}-}}\"; "))
            .collect();
        let mut sh = vec![
            "-c".to_owned(),
            format!("{exports}exec \"$@\""),
            // `$0`, what `ps` shows until the `exec`.
            "cohort-apptainer".to_owned(),
            "apptainer".to_owned(),
        ];
        sh.extend(args);
        LaunchSpec {
            program: "/bin/sh".into(),
            args: sh,
            env: Vec::new(),
        }
    }
}

/// `SRC:DST`, or `SRC:DST:ro` (pyxis and Apptainer read the same form).
fn plain_mount(m: &Mount) -> String {
    let ro = if m.read_only { ":ro" } else { "" };
    format!("{}:{}{ro}", m.src, m.dst)
}

/// The command run inside the container: `/usr/bin/env K=V … PROGRAM ARGS`, with the
/// variables the supervisor would give the engine on the bare node — its GPU variables
/// (`CUDA_DEVICE_ORDER=PCI_BUS_ID`, `CUDA_VISIBLE_DEVICES` from `instance.gpus`), then
/// the recipe's, then the adapter's — computed by the supervisor's own function, so the
/// two cannot drift apart.
///
/// Why on the command line inside rather than through the runtime: in a pyxis step,
/// slurmstepd sets `CUDA_VISIBLE_DEVICES` for every step that has GPUs, after srun's
/// export, and pyxis lets the image's values win over the host's; enroot passes no host
/// variable it is not told to; Apptainer's `--cleanenv` drops them all and its `--env`
/// splits values at commas (`CUDA_VISIBLE_DEVICES=0,1`, the JSON options). `env` runs
/// last — after slurmstepd, the runtime, the image's environment and profile scripts —
/// and `exec`s the engine, which so becomes the process the runtime started.
///
/// The values are visible to other users of the node in the process list, like the
/// engine's arguments are: secrets belong in [`Container::env`], which passes by name.
pub fn inside_command(instance: &InstanceSpec, launch: LaunchSpec) -> Vec<String> {
    let env = child_env(&[], instance, &launch.env);
    let mut command = Vec::with_capacity(env.len() + launch.args.len() + 2);
    command.push(ENV_PROGRAM.to_owned());
    command.extend(env.into_iter().map(|(k, v)| format!("{k}={v}")));
    command.push(launch.program.display().to_string());
    command.extend(launch.args);
    command
}

/// The largest id put in a bit mask (CPU or NUMA node): the same bound as
/// [`crate::topology::CpuSet`]'s parser, so a bad id cannot make a huge string.
const MAX_MASK_BIT: u32 = 1 << 20;

/// `0x…`, bit N set for each id N; `None` for no ids or one beyond [`MAX_MASK_BIT`].
fn hex_mask(ids: &[u32]) -> Option<String> {
    let max = *ids.iter().max()?;
    if max > MAX_MASK_BIT {
        return None;
    }
    let mut nibbles = vec![0u8; max as usize / 4 + 1];
    for &id in ids {
        nibbles[id as usize / 4] |= 1 << (id % 4);
    }
    let digits: String = nibbles
        .iter()
        .rev()
        .map(|&n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect();
    Some(format!("0x{digits}"))
}

/// Wraps one engine command for `container` on this node: the function to call for a
/// [`LaunchSpec`] the launcher made itself. [`Contained`] does the same for every
/// instance of an engine; both check `container` and `host` first.
pub fn wrap(
    container: &Container,
    host: &ContainerHost,
    instance: &InstanceSpec,
    launch: LaunchSpec,
) -> Result<LaunchSpec, ContainerError> {
    let w = Wrapper::new(container.clone(), host.clone())?;
    Ok(w.render(instance, launch))
}

/// An engine started from a container image: the inner engine's command, wrapped
/// ([`wrap`]); endpoints, readiness and handshake are the inner engine's, since the
/// container shares the host's network.
///
/// For the launcher: build it once per rank, after checking the recipe, with
/// `Contained::new(engine_config.build(), recipe_container, ContainerHost { node:
/// Some(slurmd_nodename), results_dir: Some(job_results) })`, and give it to the
/// [`Supervisor`](super::Supervisor) in place of the bare engine. The ready deadline is
/// the inner engine's; a first pyxis start that imports a registry image spends part of
/// it on the import.
#[derive(Debug, Clone)]
pub struct Contained {
    inner: Arc<dyn Engine>,
    wrapper: Wrapper,
}

impl Contained {
    /// `inner` run from `container` on the node `host` describes; refused when a field
    /// of either is unusable (the same checks as a recipe's).
    pub fn new(
        inner: Arc<dyn Engine>,
        container: Container,
        host: ContainerHost,
    ) -> Result<Self, ContainerError> {
        Ok(Self {
            inner,
            wrapper: Wrapper::new(container, host)?,
        })
    }

    /// The container configuration.
    pub fn container(&self) -> &Container {
        &self.wrapper.container
    }
}

impl Engine for Contained {
    /// The inner engine's name: events, metrics and errors say `vllm`, not `pyxis`.
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn launch(&self, ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
        let launch = self.inner.launch(ctx)?;
        Some(self.wrapper.render(ctx.instance, launch))
    }

    fn endpoints(&self, ctx: &EngineContext<'_>) -> Endpoints {
        self.inner.endpoints(ctx)
    }

    fn ready_deadline(&self, ctx: &EngineContext<'_>) -> Duration {
        self.inner.ready_deadline(ctx)
    }

    fn handshake(&self) -> Handshake {
        self.inner.handshake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Role;

    fn instance() -> InstanceSpec {
        serde_json::from_value(serde_json::json!({
            "id": "decode-0", "role": "decode", "host": "10.0.0.1", "port": 30010,
            "gpus": [6, 4], "model": "/models/m",
            "env": [["CUDA_VISIBLE_DEVICES", "7"], ["A", "1"]],
        }))
        .expect("a valid spec")
    }

    #[test]
    fn the_inside_environment_is_the_supervisors() {
        let i = instance();
        assert_eq!(i.role, Role::Decode);
        let launch = LaunchSpec {
            program: "vllm".into(),
            args: vec!["serve".into()],
            env: vec![("A".into(), "2".into()), ("B".into(), "x,y".into())],
        };
        let expected: Vec<String> = child_env(&[], &i, &launch.env)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cmd = inside_command(&i, launch);
        assert_eq!(cmd[0], ENV_PROGRAM);
        assert_eq!(cmd[1..cmd.len() - 2], expected[..]);
        // The recipe overrides the plan's GPUs and the adapter the recipe, as on a bare
        // node: the supervisor's order.
        assert!(
            cmd.contains(&"CUDA_VISIBLE_DEVICES=7".to_owned()),
            "{cmd:?}"
        );
        assert!(cmd.contains(&"A=2".to_owned()));
        assert!(cmd.contains(&"CUDA_DEVICE_ORDER=PCI_BUS_ID".to_owned()));
        assert_eq!(cmd[cmd.len() - 2..], ["vllm", "serve"]);
    }

    #[test]
    fn masks_are_hexadecimal_bit_sets() {
        assert_eq!(hex_mask(&[]), None);
        assert_eq!(hex_mask(&[0]).as_deref(), Some("0x1"));
        assert_eq!(hex_mask(&[0, 1, 2, 3]).as_deref(), Some("0xf"));
        assert_eq!(hex_mask(&[4]).as_deref(), Some("0x10"));
        assert_eq!(hex_mask(&[1, 70]).as_deref(), Some("0x400000000000000002"));
        let all: Vec<u32> = (0..72).collect();
        assert_eq!(hex_mask(&all).as_deref(), Some("0xffffffffffffffffff"));
        assert_eq!(hex_mask(&[u32::MAX]), None);
    }
}
