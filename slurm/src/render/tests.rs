use super::*;

fn gb200_spec() -> SbatchSpec {
    SbatchSpec {
        header: vec!["rendered by a test\n\nfrom nothing".into()],
        job_name: Some("dsr1-disagg".into()),
        resources: Resources {
            nodes: 18,
            ntasks_per_node: Some(1),
            gpus_per_node: Some(4),
            cpus_per_task: Some(144),
            partition: Some("gb200".into()),
            segment: Some(18),
            exclusive: true,
            extra: vec!["--mem=0".into()],
        },
        het_groups: vec![],
        time: Some(Duration::from_secs(4 * 3600 + 30 * 60)),
        account: Some("llm".into()),
        qos: Some("high".into()),
        signal: Some(Signal {
            name: "USR1".into(),
            seconds_before: 300,
            batch_shell_only: true,
        }),
        output: Some("logs/%x-%j.out".into()),
        error: Some("logs/%x-%j.err".into()),
        body: "srun cohort launch --recipe r.toml".into(),
    }
}

#[test]
fn renders_every_directive_in_order() {
    let script = gb200_spec().render().unwrap();
    let expected = "\
#!/bin/bash
# rendered by a test
#
# from nothing
#SBATCH --job-name=dsr1-disagg
#SBATCH --time=04:30:00
#SBATCH --account=llm
#SBATCH --qos=high
#SBATCH --output=logs/%x-%j.out
#SBATCH --error=logs/%x-%j.err
#SBATCH --signal=B:USR1@300
#SBATCH --nodes=18
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=144
#SBATCH --segment=18
#SBATCH --partition=gb200
#SBATCH --exclusive
#SBATCH --mem=0

srun cohort launch --recipe r.toml
";
    assert_eq!(script, expected);
}

#[test]
fn het_groups_follow_hetjob_separators() {
    let mut spec = SbatchSpec {
        resources: Resources {
            nodes: 1,
            ..Resources::default()
        },
        body: "true\n".into(),
        ..SbatchSpec::default()
    };
    spec.het_groups.push(Resources {
        nodes: 2,
        gpus_per_node: Some(8),
        ..Resources::default()
    });
    let script = spec.render().unwrap();
    assert_eq!(
        script,
        "#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH hetjob\n#SBATCH --nodes=2\n\
         #SBATCH --gpus-per-node=8\n\ntrue\n"
    );
}

#[test]
fn time_formats() {
    assert_eq!(slurm_time(Duration::from_secs(59)), "00:00:59");
    assert_eq!(slurm_time(Duration::from_millis(1500)), "00:00:02");
    assert_eq!(slurm_time(Duration::from_secs(86_400 + 3661)), "1-01:01:01");
}

#[test]
fn bad_values_name_the_field() {
    let mut spec = gb200_spec();
    spec.account = Some("my account".into());
    let e = spec.render().unwrap_err();
    assert_eq!(e.field, "account");
    assert!(e.to_string().contains("`my account`"), "{e}");

    let mut spec = gb200_spec();
    spec.resources.gpus_per_node = Some(0);
    assert_eq!(spec.render().unwrap_err().field, "gpus_per_node");

    let mut spec = gb200_spec();
    spec.resources.extra = vec!["--mem=0\nrm -rf /".into()];
    assert_eq!(spec.render().unwrap_err().field, "extra");

    let mut spec = gb200_spec();
    spec.het_groups.push(Resources::default());
    assert_eq!(spec.render().unwrap_err().field, "nodes");

    let mut spec = gb200_spec();
    spec.time = Some(Duration::ZERO);
    assert_eq!(spec.render().unwrap_err().field, "time");

    let mut spec = gb200_spec();
    spec.resources.nodes = 32;
    let e = spec.render().unwrap_err();
    assert_eq!(e.field, "segment");
    assert_eq!(
        e.to_string(),
        "`segment` must divide the node count; given `18 (nodes 32)`"
    );
    spec.resources.segment = Some(16);
    assert!(spec.render().unwrap().contains("#SBATCH --segment=16\n"));
}

#[test]
fn header_lines_stay_comments() {
    let spec = SbatchSpec {
        header: vec!["line one\n#SBATCH --nodes=999\nrm -rf /".into()],
        resources: Resources {
            nodes: 1,
            ..Resources::default()
        },
        ..SbatchSpec::default()
    };
    let script = spec.render().unwrap();
    assert!(
        script.starts_with("#!/bin/bash\n# line one\n# #SBATCH --nodes=999\n# rm -rf /\n"),
        "{script}"
    );
    let directives: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect();
    assert_eq!(directives, ["#SBATCH --nodes=1"]);
}

#[test]
fn shell_quoting() {
    assert_eq!(shell_quote("/usr/bin/cohort"), "/usr/bin/cohort");
    assert_eq!(shell_quote("--nodes=4"), "--nodes=4");
    assert_eq!(shell_quote("results/%j"), "results/%j");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's"), "'it'\\''s'");
    assert_eq!(shell_quote("$HOME"), "'$HOME'");
    assert_eq!(shell_quote("FOO=1"), "'FOO=1'", "not an assignment");
    assert_eq!(shell_words(&["srun", "my prog", "-x"]), "srun 'my prog' -x");
}

/// The shell splits a quoted command line back into exactly the words given.
#[test]
fn shell_words_round_trip_through_bash() {
    let words = [
        "plain",
        "two words",
        "it's",
        "$HOME `id` $(id) \\ \"q\"",
        "*?[a]",
        "line\nbreak",
        "",
        "~user",
        "A=1",
        "#not-a-comment",
        "é ü",
    ];
    let line = format!("printf '%s\\0' {}", shell_words(&words));
    let out = std::process::Command::new("bash")
        .args(["-c", &line])
        .output()
        .expect("run bash");
    assert!(out.status.success());
    let got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    assert_eq!(got, words);
}

#[test]
fn srun_args() {
    let spec = SrunSpec {
        nodes: Some(4),
        ntasks_per_node: Some(1),
        mpi: Some("pmix".into()),
        cpu_bind: Some("none".into()),
        kill_on_bad_exit: true,
        command: vec!["cohort".into(), "launch".into()],
        ..SrunSpec::default()
    };
    assert_eq!(
        spec.args().unwrap(),
        [
            "srun",
            "--nodes=4",
            "--ntasks-per-node=1",
            "--mpi=pmix",
            "--cpu-bind=none",
            "--kill-on-bad-exit=1",
            "cohort",
            "launch"
        ]
    );
    let empty = SrunSpec::default();
    assert_eq!(empty.args().unwrap_err().field, "command");
}
