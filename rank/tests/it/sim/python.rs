//! The official `openai` Python package against the simulator (`tests/sim/openai_client.py`).
//!
//! Needs `python3` with `openai` installed; fails with that hint when missing, unless
//! `COHORT_SKIP_PYTHON_TESTS` is set.

use super::start;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn the_official_openai_client_works_against_the_sim() {
    if std::env::var_os("COHORT_SKIP_PYTHON_TESTS").is_some() {
        return;
    }
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the `openai` Python package is missing: `pip install openai==1.109.1`, or set \
             COHORT_SKIP_PYTHON_TESTS=1 to skip this test\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            panic!("cannot run `python3` ({e}); set COHORT_SKIP_PYTHON_TESTS=1 to skip this test")
        }
    }
    let sim = start(&[]).await;
    let url = format!("http://{}/v1", sim.instances()[0].addr);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sim/openai_client.py");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the Python client finishes within 60 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    sim.shutdown().await;
}
