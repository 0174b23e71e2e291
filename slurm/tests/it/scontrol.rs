//! Differential tests: cohort's hostlist expansion and compression against the real
//! `scontrol show hostnames` / `scontrol show hostlist` (Debian's Slurm).
//!
//! scontrol's hostlist functions need only a minimal `slurm.conf`, no controller. The
//! expressions are generated from a fixed seed, so a failure is reproducible; the suffix
//! form (`gpu-[1-2]x`) is left out because Slurm 22.05 rejects it while current Slurm and
//! cohort accept it.

use std::path::PathBuf;
use std::process::Command;

use cohort_slurm::hostlist::{compress, expand};

/// Set to skip these tests on a machine without Slurm's client tools (the README's test
/// command installs them, so CI never skips).
const SKIP_VAR: &str = "COHORT_SKIP_SLURM_TESTS";

struct Scontrol {
    conf: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Scontrol {
    fn new() -> Option<Self> {
        if std::env::var_os(SKIP_VAR).is_some() {
            eprintln!("SKIPPED: {SKIP_VAR} is set");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "cohort-scontrol-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("slurm.conf");
        std::fs::write(&conf, "ClusterName=cohort\nSlurmctldHost=localhost\n").unwrap();
        let found = Command::new("scontrol")
            .arg("--version")
            .env("SLURM_CONF", &conf)
            .output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "`scontrol` is needed for the differential hostlist tests: run the README's test \
             command (it installs Slurm) or set {SKIP_VAR}=1"
        );
        Some(Self {
            conf,
            _dir: TempDir(dir),
        })
    }

    fn run(&self, what: &str, arg: &str) -> Result<String, String> {
        let out = Command::new("scontrol")
            .args(["show", what, arg])
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("run scontrol");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // scontrol reports some parse failures with exit status 0, on stdout.
        if !out.status.success() || !stderr.is_empty() || stdout.starts_with("Invalid") {
            return Err(format!("{stdout}{stderr}"));
        }
        Ok(stdout)
    }

    fn hostnames(&self, expr: &str) -> Result<Vec<String>, String> {
        self.run("hostnames", expr)
            .map(|s| s.lines().map(str::to_owned).collect())
    }

    fn hostlist(&self, names: &[String]) -> Result<String, String> {
        self.run("hostlist", &names.join(","))
            .map(|s| s.trim_end().to_owned())
    }
}

/// A small deterministic generator (xorshift64*), so the corpus is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn bracket(rng: &mut Rng) -> String {
    let items = 1 + rng.below(3);
    let mut parts = Vec::new();
    for _ in 0..items {
        let width = rng.below(4) as usize;
        let lo = rng.below(120);
        let lo_text = format!("{lo:0width$}");
        match rng.below(3) {
            0 => parts.push(lo_text),
            _ => {
                let hi = lo + rng.below(12);
                let hi_width = rng.below(4) as usize;
                parts.push(format!("{lo_text}-{hi:0hi_width$}"));
            }
        }
    }
    format!("[{}]", parts.join(","))
}

fn item(rng: &mut Rng) -> String {
    let prefixes = ["n", "gpu", "rack", "node-", "a", "x1-", "cn"];
    let mut out = rng.pick(&prefixes).to_owned();
    let groups = rng.below(4);
    if groups == 0 {
        out.push_str(&rng.below(200).to_string());
    }
    for g in 0..groups {
        out.push_str(&bracket(rng));
        if g + 1 < groups {
            out.push_str(rng.pick(&["-", "n", "-s", "_"]));
        }
    }
    out
}

fn expression(rng: &mut Rng) -> String {
    let items = 1 + rng.below(4);
    let mut out = String::new();
    for i in 0..items {
        if i > 0 {
            out.push_str(rng.pick(&[",", " ", ", ", "\t"]));
        }
        out.push_str(&item(rng));
    }
    out
}

#[test]
fn expansion_matches_scontrol_on_a_generated_corpus() {
    let Some(scontrol) = Scontrol::new() else {
        return;
    };
    let mut rng = Rng(0x00c0_ffee_d15e_a5e5);
    let mut compared = 0;
    for _ in 0..400 {
        let expr = expression(&mut rng);
        let ours = expand(&expr).unwrap_or_else(|e| panic!("cohort rejects `{expr}`: {e}"));
        if ours.len() > 5_000 {
            continue; // keep scontrol's argument and output small
        }
        let theirs = scontrol
            .hostnames(&expr)
            .unwrap_or_else(|e| panic!("`{expr}`: {e}"));
        assert_eq!(ours, theirs, "expansion of `{expr}`");
        compared += 1;
    }
    assert!(compared >= 300, "only {compared} expressions compared");
    eprintln!("expansion: {compared} generated expressions identical to scontrol");
}

#[test]
fn compression_matches_scontrol_on_a_generated_corpus() {
    let Some(scontrol) = Scontrol::new() else {
        return;
    };
    let mut rng = Rng(0x5eed_0fc0_4017);
    let prefixes = ["n", "m", "gpu", "", "r1-n"];
    for _ in 0..300 {
        let count = 1 + rng.below(25);
        let names: Vec<String> = (0..count)
            .map(|_| {
                let width = rng.below(4) as usize;
                match rng.below(8) {
                    0 => rng.pick(&["login", "head", "gpu-x"]).to_owned(),
                    _ => format!("{}{:0width$}", rng.pick(&prefixes), rng.below(16)),
                }
            })
            .collect();
        let theirs = scontrol
            .hostlist(&names)
            .unwrap_or_else(|e| panic!("{names:?}: {e}"));
        assert_eq!(compress(&names), theirs, "compression of {names:?}");
        assert_eq!(expand(&theirs).unwrap(), names, "round trip of {names:?}");
    }
}

#[test]
fn documented_cases_match_scontrol() {
    let Some(scontrol) = Scontrol::new() else {
        return;
    };
    for expr in [
        "rack[1-2]-n[001-003,010]",
        "n[09-11]",
        "n[9-011]",
        "n[1-3] m[1-2]",
        "n[1-2],n1",
    ] {
        assert_eq!(
            expand(expr).unwrap(),
            scontrol.hostnames(expr).unwrap(),
            "{expr}"
        );
    }
    // Both reject a backwards range; cohort also says where.
    assert!(scontrol.hostnames("n[10-8]").is_err());
    let e = expand("n[10-8]").unwrap_err();
    assert_eq!(e.position, 2);
}
