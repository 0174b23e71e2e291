//! The command line: help, the `slurm` subcommands, stdout closed early, `sim`.

use crate::fixtures::{cohort, stderr, stdout};

#[test]
fn help_lists_every_command() {
    let out = cohort().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    for command in ["launch", "plan", "bench", "sim", "sbatch", "topo", "slurm"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command}:\n{help}"
        );
    }
}

#[test]
fn hostnames_prints_one_name_per_line() {
    let out = cohort()
        .args(["slurm", "hostnames", "rack[1-2]-n[001-003,010]"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(names.len(), 8);
    assert_eq!(names[0], "rack1-n001");
    assert_eq!(names[7], "rack2-n010");
}

#[test]
fn hostnames_rejects_a_backwards_range_with_its_position() {
    let out = cohort()
        .args(["slurm", "hostnames", "n[10-8]"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: invalid hostlist `n[10-8]` at byte 2"),
        "{err}"
    );
    assert!(err.contains("`10-8`"), "{err}");
    assert!(stdout(&out).is_empty(), "nothing on stdout on error");
}

#[test]
fn hostlist_compresses_names_and_lists() {
    let out = cohort()
        .args(["slurm", "hostlist", "n1", "n2", "n3", "n5", "m1", "n010"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "n[1-3,5],m1,n010\n");
    let out = cohort()
        .args(["slurm", "hostlist", "n[1-2],n3"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "n[1-3]\n");
}

#[test]
fn env_outside_slurm() {
    let out = cohort()
        .args(["slurm", "env", "--json"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ctx: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(ctx["kind"], "outside");
    let table = cohort()
        .args(["slurm", "env"])
        .env_clear()
        .output()
        .unwrap();
    assert!(stdout(&table).contains("outside Slurm"));
}

#[test]
fn env_reports_a_malformed_variable_by_name() {
    let out = cohort()
        .args(["slurm", "env"])
        .env_clear()
        .env("SLURM_JOB_ID", "5")
        .env("SLURM_JOB_NODELIST", "n[1-2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("SLURM_JOB_NODELIST") && err.contains("caused by:"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_is_not_reported_as_an_error() {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = cohort()
        .args(["slurm", "hostnames", "n[1-60000]"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 3];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then drop: close the pipe
    let out = child.wait_with_output().unwrap();
    assert_eq!(&first, b"n1\n");
    assert_eq!(
        stderr(&out),
        "",
        "no error message for a reader that stopped early"
    );
    assert_eq!(out.status.code(), Some(141));
}

#[test]
fn sim_serves_until_terminated() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpStream;
    use std::process::Stdio;
    let mut child = cohort()
        .args(["sim", "--port", "0", "--speedup", "inf"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A startup line names the address it listens on (`--port 0`: the OS chose it).
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = stderr_lines
        .by_ref()
        .take(10)
        .map_while(Result::ok)
        .find_map(|line| {
            let at = line.find("http://")?;
            Some(
                line[at + "http://".len()..]
                    .split_whitespace()
                    .next()?
                    .to_owned(),
            )
        })
        .expect("a startup line with the listening address");
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the sim cleanly: {status:?}");
}
