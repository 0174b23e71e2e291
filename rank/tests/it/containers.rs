//! Engines started from container images (`engine::container`): the exact command lines
//! pyxis, enroot and Apptainer get, as snapshots, and the properties they must keep —
//! the GPU binding inside the container, the mounts, the host's network, the checks.
//!
//! None of these runtimes is installed here; `docs/containers.md` says what each flag is
//! for. What can run without them does: the command run inside the container, and the
//! shell that hands named variables to Apptainer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_rank::engine::container::{
    wrap, Contained, Container, ContainerHost, Mount, Runtime, ENV_PROGRAM,
};
use cohort_rank::engine::external::ExternalEngine;
use cohort_rank::engine::sglang::SglangEngine;
use cohort_rank::engine::trtllm::TrtllmEngine;
use cohort_rank::engine::vllm::VllmEngine;
use cohort_rank::engine::{
    Endpoints, Engine, EngineContext, Handshake, InstanceSpec, LaunchSpec, Role,
};
use serde::Serialize;

const RUNTIMES: [Runtime; 3] = [Runtime::Pyxis, Runtime::Enroot, Runtime::Apptainer];
const MODEL: &str = "/lustre/models/DeepSeek-R1";
const RESULTS: &str = "/lustre/results/42";

/// An instance as the launcher fills it for local weights: node address `10.1.2.3`,
/// block at 30010, the node's second four GPUs, the first socket's CPUs. Built from JSON
/// so that fields added to the spec later take their defaults.
fn spec(role: Role) -> InstanceSpec {
    serde_json::from_value(serde_json::json!({
        "id": format!("{}-0", role.name()),
        "role": role,
        "host": "10.1.2.3",
        "port": 30010,
        "kv_events_port": 30011,
        "gpus": [4, 5, 6, 7],
        "cpus": "0-71",
        "mem_nodes": [0],
        "model": MODEL,
        "served_model_name": "deepseek-ai/DeepSeek-R1",
        "tp": 4,
        "nvlink_domain": "nvl72-rack0",
        "extra_args": ["--trust-remote-code"],
        "env": [["NCCL_DEBUG", "WARN"]],
    }))
    .expect("a valid instance spec")
}

fn container(runtime: Runtime, engine: &str) -> Container {
    let image = match runtime {
        Runtime::Pyxis => format!("nvcr.io#nvidia/ai-dynamo/{engine}-runtime:0.4.1"),
        Runtime::Enroot => format!("/lustre/images/{engine}-runtime-0.4.1.sqsh"),
        Runtime::Apptainer => format!("/lustre/images/{engine}-runtime-0.4.1.sif"),
    };
    Container {
        runtime,
        image,
        mounts: vec!["/scratch/hf:/root/.cache/huggingface".into()],
        env: vec!["HF_TOKEN".into()],
        writable: false,
        args: vec![],
    }
}

fn host() -> ContainerHost {
    ContainerHost {
        node: Some("gpu07".into()),
        results_dir: Some(RESULTS.into()),
    }
}

fn contained(inner: impl Engine + 'static, c: Container) -> Contained {
    Contained::new(Arc::new(inner), c, host()).expect("a valid container")
}

fn launch(engine: &dyn Engine, spec: &InstanceSpec) -> LaunchSpec {
    engine
        .launch(&EngineContext { instance: spec })
        .expect("a real engine starts a process")
}

#[derive(Serialize)]
struct Snap<'a> {
    program: String,
    args: &'a [String],
    env: BTreeMap<&'a str, &'a str>,
}

fn snap(l: &LaunchSpec) -> Snap<'_> {
    Snap {
        program: l.program.display().to_string(),
        args: &l.args,
        env: l
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    }
}

/// Where the command run inside the container starts.
fn inside_at(l: &LaunchSpec) -> usize {
    l.args
        .iter()
        .position(|a| a == ENV_PROGRAM)
        .unwrap_or_else(|| panic!("no `{ENV_PROGRAM}` in {:?}", l.args))
}

/// The mounts of a wrapped command, as `(src, dst, read_only)`.
fn mounts(runtime: Runtime, l: &LaunchSpec) -> Vec<(String, String, bool)> {
    let split = |m: &str| {
        let p: Vec<&str> = m.split(':').collect();
        let ro =
            p.get(2).is_some_and(|f| *f == "ro") || p.get(3).is_some_and(|o| o.ends_with(",ro"));
        (p[0].to_owned(), p[1].to_owned(), ro)
    };
    let args = &l.args[..inside_at(l)];
    match runtime {
        Runtime::Pyxis => args
            .iter()
            .filter_map(|a| a.strip_prefix("--container-mounts="))
            .flat_map(|list| list.split(','))
            .map(split)
            .collect(),
        Runtime::Enroot | Runtime::Apptainer => {
            let flag = if runtime == Runtime::Enroot {
                "--mount"
            } else {
                "--bind"
            };
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| split(&w[1]))
                .collect()
        }
    }
}

// ---------------------------------------------------------------- snapshots

#[test]
fn vllm_prefill_command_lines() {
    let s = spec(Role::Prefill);
    for runtime in RUNTIMES {
        let e = contained(VllmEngine::default(), container(runtime, "vllm"));
        insta::assert_json_snapshot!(
            format!("vllm_prefill_{}", runtime.name()),
            snap(&launch(&e, &s))
        );
    }
}

#[test]
fn sglang_decode_command_lines() {
    let s = spec(Role::Decode);
    for runtime in RUNTIMES {
        let e = contained(SglangEngine::default(), container(runtime, "sglang"));
        insta::assert_json_snapshot!(
            format!("sglang_decode_{}", runtime.name()),
            snap(&launch(&e, &s))
        );
    }
}

#[test]
fn trtllm_prefill_command_lines() {
    let s = InstanceSpec {
        extra_args: vec!["--trust_remote_code".into()],
        ..spec(Role::Prefill)
    };
    for runtime in RUNTIMES {
        // The launcher puts the options file beside the logs, under the results.
        let inner = TrtllmEngine {
            config_dir: Some(PathBuf::from(RESULTS).join("logs")),
            ..TrtllmEngine::default()
        };
        let e = contained(inner, container(runtime, "tensorrtllm"));
        insta::assert_json_snapshot!(
            format!("trtllm_prefill_{}", runtime.name()),
            snap(&launch(&e, &s))
        );
    }
}

// ---------------------------------------------------------------- behaviour

#[test]
fn the_gpu_binding_and_engine_environment_are_inside_the_container() {
    let engines: [(&str, Arc<dyn Engine>); 3] = [
        ("vllm", Arc::new(VllmEngine::default())),
        ("sglang", Arc::new(SglangEngine::default())),
        ("tensorrtllm", Arc::new(TrtllmEngine::default())),
    ];
    for (name, inner) in engines {
        for runtime in RUNTIMES {
            let s = spec(Role::Prefill);
            let bare = launch(inner.as_ref(), &s);
            let e = Contained::new(inner.clone(), container(runtime, name), host()).unwrap();
            let l = launch(&e, &s);
            let at = inside_at(&l);
            let image = l.args.iter().position(|a| *a == e.container().image);
            // pyxis names the image in an option; enroot and Apptainer before the command.
            if runtime != Runtime::Pyxis {
                assert_eq!(image, Some(at - 1), "{name} {runtime:?}: {:?}", l.args);
            }
            let inside = &l.args[at..];
            let program = bare.program.display().to_string();
            let p = inside
                .iter()
                .position(|a| *a == program)
                .unwrap_or_else(|| panic!("no `{program}` in {inside:?}"));
            let vars = &inside[1..p];
            for var in [
                "CUDA_DEVICE_ORDER=PCI_BUS_ID",
                "CUDA_VISIBLE_DEVICES=4,5,6,7",
                "NCCL_DEBUG=WARN",
            ] {
                assert!(
                    vars.iter().any(|v| v == var),
                    "{name} {runtime:?}: no {var} in {vars:?}"
                );
            }
            for (k, v) in &bare.env {
                assert!(
                    vars.contains(&format!("{k}={v}")),
                    "{name} {runtime:?}: {k} lost"
                );
            }
            // The engine's own command, untouched: same ports, same host.
            assert_eq!(inside[p + 1..], bare.args[..], "{name} {runtime:?}");
            assert!(bare.args.iter().any(|a| a == "30010"));
        }
    }
    // Another plan, another binding: the wrapper follows the spec.
    let s = InstanceSpec {
        gpus: vec![1, 0],
        ..spec(Role::Decode)
    };
    let e = contained(VllmEngine::default(), container(Runtime::Enroot, "vllm"));
    let l = launch(&e, &s);
    assert!(l.args[inside_at(&l)..].contains(&"CUDA_VISIBLE_DEVICES=0,1".to_owned()));
}

#[test]
fn the_binding_survives_a_reset_environment() {
    // The command run inside the container, for real: started with the environment a
    // pyxis step may have (slurmstepd's `CUDA_VISIBLE_DEVICES`, nothing of the plan's),
    // it still gives the engine the plan's GPUs and the adapter's variables.
    #[derive(Debug)]
    struct Echo;
    impl Engine for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn launch(&self, _ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
            Some(LaunchSpec {
                program: "/bin/sh".into(),
                args: vec![
                    "-c".into(),
                    r#"echo "$CUDA_VISIBLE_DEVICES|$CUDA_DEVICE_ORDER|$NCCL_DEBUG|$OPTS""#.into(),
                ],
                env: vec![("OPTS".into(), r#"{"a": 1, "b": [2, 3]}"#.into())],
            })
        }
        fn endpoints(&self, _ctx: &EngineContext<'_>) -> Endpoints {
            Endpoints {
                url: String::new(),
                health_url: String::new(),
                metrics_url: None,
                kv_events_url: None,
            }
        }
        fn ready_deadline(&self, _ctx: &EngineContext<'_>) -> Duration {
            Duration::ZERO
        }
        fn handshake(&self) -> Handshake {
            Handshake::None
        }
    }
    let e = contained(Echo, container(Runtime::Pyxis, "echo"));
    let l = launch(&e, &spec(Role::Decode));
    let inside = &l.args[inside_at(&l)..];
    let out = std::process::Command::new(&inside[0])
        .args(&inside[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"4,5,6,7|PCI_BUS_ID|WARN|{"a": 1, "b": [2, 3]}"#
    );
}

#[test]
fn the_model_and_results_are_mounted_once() {
    for runtime in RUNTIMES {
        let e = contained(VllmEngine::default(), container(runtime, "vllm"));
        let m = mounts(runtime, &launch(&e, &spec(Role::Prefill)));
        let at = |dst: &str| m.iter().filter(|(_, d, _)| d == dst).collect::<Vec<_>>();
        assert_eq!(
            at(MODEL),
            [&(MODEL.to_owned(), MODEL.to_owned(), true)],
            "{runtime:?}: {m:?}"
        );
        assert_eq!(
            at(RESULTS),
            [&(RESULTS.to_owned(), RESULTS.to_owned(), false)],
            "{runtime:?}: {m:?}"
        );
        // The listed mount, as listed.
        assert_eq!(
            at("/root/.cache/huggingface"),
            [&(
                "/scratch/hf".to_owned(),
                "/root/.cache/huggingface".to_owned(),
                false
            )]
        );
        assert_eq!(m.len(), 3, "{runtime:?}: {m:?}");

        // A Hugging Face id is no path, and no results directory was given.
        let hub = InstanceSpec {
            model: "deepseek-ai/DeepSeek-R1".into(),
            ..spec(Role::Prefill)
        };
        let bare_host = ContainerHost {
            node: Some("gpu07".into()),
            results_dir: None,
        };
        let e = Contained::new(
            Arc::new(VllmEngine::default()),
            container(runtime, "vllm"),
            bare_host,
        )
        .unwrap();
        let m = mounts(runtime, &launch(&e, &hub));
        assert_eq!(m.len(), 1, "{runtime:?}: {m:?}");
    }
}

#[test]
fn a_listed_mount_is_not_duplicated() {
    for runtime in RUNTIMES {
        // The user's mount covers both the model and the results: nothing is added.
        let c = Container {
            mounts: vec!["/lustre:/lustre".into()],
            ..container(runtime, "vllm")
        };
        let e = contained(VllmEngine::default(), c);
        let m = mounts(runtime, &launch(&e, &spec(Role::Decode)));
        assert_eq!(
            m,
            [("/lustre".to_owned(), "/lustre".to_owned(), false)],
            "{runtime:?}"
        );

        // The user mounts the model's own path (here from elsewhere, writable): theirs,
        // once, and the results directory still added.
        let c = Container {
            mounts: vec![format!("/scratch/r1:{MODEL}")],
            ..container(runtime, "vllm")
        };
        let e = contained(VllmEngine::default(), c);
        let m = mounts(runtime, &launch(&e, &spec(Role::Decode)));
        assert_eq!(
            m,
            [
                (RESULTS.to_owned(), RESULTS.to_owned(), false),
                ("/scratch/r1".to_owned(), MODEL.to_owned(), false),
            ],
            "{runtime:?}"
        );
    }
}

#[test]
fn bad_configurations_are_refused_with_the_field() {
    let inner: Arc<dyn Engine> = Arc::new(VllmEngine::default());
    let s = spec(Role::Prefill);
    let bare = launch(inner.as_ref(), &s);
    for (mount, runtime) in [
        ("models:/models", Runtime::Pyxis),
        ("/models", Runtime::Enroot),
        ("/a,/b:/models", Runtime::Apptainer),
        ("/models:/models:rx", Runtime::Pyxis),
    ] {
        let c = Container {
            mounts: vec![mount.into()],
            ..container(runtime, "vllm")
        };
        let e = Contained::new(inner.clone(), c.clone(), host()).unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("mounts", mount));
        assert!(e.to_string().contains("`SRC:DST` or `SRC:DST:ro`"), "{e}");
        let e = wrap(&c, &host(), &s, bare.clone()).unwrap_err();
        assert_eq!(e.field, "mounts");
    }
    // pyxis needs the node's Slurm name; the others do not.
    let no_node = ContainerHost {
        node: None,
        ..host()
    };
    let e = Contained::new(
        inner.clone(),
        container(Runtime::Pyxis, "vllm"),
        no_node.clone(),
    )
    .unwrap_err();
    assert_eq!(e.field, "node");
    assert!(e.to_string().contains("SLURMD_NODENAME"), "{e}");
    assert!(Contained::new(inner.clone(), container(Runtime::Enroot, "vllm"), no_node).is_ok());
    // A results directory that cannot be mounted.
    let odd = ContainerHost {
        results_dir: Some("results/42".into()),
        ..host()
    };
    let e = Contained::new(inner.clone(), container(Runtime::Apptainer, "vllm"), odd).unwrap_err();
    assert_eq!(e.field, "results_dir");
    // Empty image, a variable that is no name, an option cohort owns.
    for (c, field) in [
        (
            Container {
                image: " ".into(),
                ..container(Runtime::Pyxis, "vllm")
            },
            "image",
        ),
        (
            Container {
                env: vec!["HF_TOKEN=abc".into()],
                ..container(Runtime::Enroot, "vllm")
            },
            "env",
        ),
        (
            Container {
                args: vec!["-B/x:/x".into()],
                ..container(Runtime::Apptainer, "vllm")
            },
            "args",
        ),
    ] {
        assert_eq!(c.check().unwrap_err().field, field, "{c:?}");
        assert_eq!(
            Contained::new(inner.clone(), c, host()).unwrap_err().field,
            field
        );
    }
}

#[test]
fn the_host_network_is_kept() {
    for runtime in RUNTIMES {
        let e = contained(SglangEngine::default(), container(runtime, "sglang"));
        let l = launch(&e, &spec(Role::Prefill));
        let outside = &l.args[..inside_at(&l)];
        for isolating in [
            "--net",
            "--network",
            "--container-unshare",
            "--contain",
            "-C",
        ] {
            assert!(
                !outside
                    .iter()
                    .any(|a| a == isolating || a.starts_with(&format!("{isolating}="))),
                "{runtime:?}: {outside:?}"
            );
        }
        // The engine binds the node's address and its own block, as on the bare node.
        let inside = &l.args[inside_at(&l)..];
        assert!(inside.windows(2).any(|w| w == ["--host", "10.1.2.3"]));
        assert!(inside.windows(2).any(|w| w == ["--port", "30010"]));
    }
}

#[test]
fn pyxis_runs_a_bound_step_on_this_node() {
    let e = contained(VllmEngine::default(), container(Runtime::Pyxis, "vllm"));
    let l = launch(&e, &spec(Role::Decode));
    assert_eq!(l.program, PathBuf::from("srun"));
    let outside = &l.args[..inside_at(&l)];
    for flag in [
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=gpu07",
        "--overlap",
        "--export=ALL",
        // CPUs 0-71, NUMA node 0.
        "--cpu-bind=mask_cpu:0xffffffffffffffffff",
        "--mem-bind=mask_mem:0x1",
        "--no-container-mount-home",
        "--no-container-entrypoint",
        "--container-env=HF_TOKEN",
    ] {
        assert!(
            outside.iter().any(|a| a == flag),
            "no {flag} in {outside:?}"
        );
    }
    // No CPUs in the plan: Slurm must not pick a binding of its own.
    let unbound = InstanceSpec {
        cpus: None,
        mem_nodes: vec![],
        ..spec(Role::Decode)
    };
    let l = launch(&e, &unbound);
    assert!(l.args.iter().any(|a| a == "--cpu-bind=none"));
    assert!(!l.args.iter().any(|a| a.starts_with("--mem-bind")));
}

#[test]
fn writable_and_extra_options_go_before_the_image() {
    for (runtime, flag) in [
        (Runtime::Pyxis, "--container-writable"),
        (Runtime::Enroot, "--rw"),
        (Runtime::Apptainer, "--writable-tmpfs"),
    ] {
        let plain = contained(VllmEngine::default(), container(runtime, "vllm"));
        let l = launch(&plain, &spec(Role::Decode));
        assert!(!l.args.iter().any(|a| a == flag), "{runtime:?}");
        let c = Container {
            writable: true,
            args: vec!["--extra-option".into()],
            ..container(runtime, "vllm")
        };
        let e = contained(VllmEngine::default(), c);
        let l = launch(&e, &spec(Role::Decode));
        let at = inside_at(&l);
        let pos = |w: &str| l.args[..at].iter().position(|a| a == w);
        assert!(pos(flag).is_some(), "{runtime:?}: {:?}", l.args);
        let extra = pos("--extra-option").unwrap();
        if runtime == Runtime::Pyxis {
            assert_eq!(extra, at - 1);
        } else {
            assert_eq!(extra, at - 2, "then the image");
        }
    }
}

#[test]
fn named_variables_pass_by_name() {
    for runtime in [Runtime::Pyxis, Runtime::Enroot] {
        let e = contained(VllmEngine::default(), container(runtime, "vllm"));
        let l = launch(&e, &spec(Role::Decode));
        let outside = &l.args[..inside_at(&l)];
        let by_name = match runtime {
            Runtime::Pyxis => outside.iter().any(|a| a == "--container-env=HF_TOKEN"),
            _ => outside.windows(2).any(|w| w == ["--env", "HF_TOKEN"]),
        };
        assert!(by_name, "{runtime:?}: {outside:?}");
    }
    // Apptainer: a shell renames them to `APPTAINERENV_*` and becomes Apptainer. Run it
    // for real, with a stand-in `apptainer` that prints its environment and arguments.
    let dir = std::env::temp_dir().join(format!("cohort-containers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("apptainer");
    std::fs::write(&fake, "#!/bin/sh\nenv\necho \"ARGS $*\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let e = contained(VllmEngine::default(), container(Runtime::Apptainer, "vllm"));
    let l = launch(&e, &spec(Role::Decode));
    assert!(!l.args.iter().any(|a| a.contains("s3cr3t")));
    let out = std::process::Command::new(&l.program)
        .args(&l.args)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("HF_TOKEN", "s3cr3t")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "APPTAINERENV_HF_TOKEN=s3cr3t"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ARGS exec --nv --cleanenv --no-home"),
        "{stdout}"
    );
}

#[test]
fn contained_is_the_inner_engine_but_for_its_command() {
    let inner = VllmEngine::default();
    let s = spec(Role::Prefill);
    let ctx = EngineContext { instance: &s };
    let e = contained(inner.clone(), container(Runtime::Enroot, "vllm"));
    assert_eq!(e.name(), "vllm");
    assert_eq!(e.handshake(), Handshake::VllmKvTransferParams);
    assert_eq!(e.endpoints(&ctx), inner.endpoints(&ctx));
    assert_eq!(e.ready_deadline(&ctx), inner.ready_deadline(&ctx));
    // Nothing to start: nothing to wrap.
    let external = contained(ExternalEngine::default(), container(Runtime::Pyxis, "x"));
    assert_eq!(external.launch(&ctx), None);
    // A follower of a multi-node instance is wrapped like its leader.
    let follower: InstanceSpec = serde_json::from_value({
        let mut v = serde_json::to_value(spec(Role::Decode)).unwrap();
        v["multi_node"] = serde_json::json!({
            "nnodes": 2, "node_rank": 1, "leader_host": "10.1.2.4", "leader_port": 30010
        });
        v
    })
    .unwrap();
    let l = launch(&e, &follower);
    assert!(l.args[inside_at(&l)..].iter().any(|a| a == "--headless"));
}

#[test]
fn mounts_and_names_parse_strictly() {
    let m: Mount = "/a:/b:ro".parse().unwrap();
    assert_eq!(
        (m.src.as_str(), m.dst.as_str(), m.read_only),
        ("/a", "/b", true)
    );
    assert!(!"/a:/b".parse::<Mount>().unwrap().read_only);
    assert!(!"/a:/b:rw".parse::<Mount>().unwrap().read_only);
    for bad in [
        "",
        "/a",
        "a:/b",
        "/a:b",
        "/a:/b:rx",
        "/a:/b:ro:x",
        "/a b:/b",
        "/a,/c:/b",
        "/a::/b",
    ] {
        let e = bad.parse::<Mount>().unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("mounts", bad));
    }
    let with_env = |name: &str| Container {
        env: vec![name.into()],
        ..container(Runtime::Enroot, "vllm")
    };
    for ok in ["HF_TOKEN", "_X", "a1"] {
        assert_eq!(with_env(ok).check(), Ok(()), "{ok}");
    }
    for bad in ["", "1A", "A-B", "A=B", "A B", "-u"] {
        assert_eq!(with_env(bad).check().unwrap_err().field, "env", "{bad}");
    }
    let twice = Container {
        env: vec!["A".into(), "A".into()],
        ..container(Runtime::Pyxis, "vllm")
    };
    assert_eq!(twice.check().unwrap_err().field, "env");
}

proptest::proptest! {
    /// No text panics the checks, and a mount that parses renders back to itself.
    #[test]
    fn arbitrary_container_values_never_panic(text in "\\PC{0,40}") {
        if let Ok(m) = text.parse::<Mount>() {
            let back = format!("{}:{}{}", m.src, m.dst, if m.read_only { ":ro" } else { "" });
            let rw = format!("{back}:rw");
            proptest::prop_assert!(text == back || text == rw, "{} renders as {}", text, back);
        }
        for runtime in RUNTIMES {
            let c = Container {
                runtime,
                image: text.clone(),
                mounts: vec![text.clone()],
                env: vec![text.clone()],
                writable: false,
                args: vec![text.clone()],
            };
            if c.check().is_ok() {
                let e = Contained::new(Arc::new(VllmEngine::default()), c, host()).unwrap();
                let _ = launch(&e, &spec(Role::Decode));
            }
        }
    }
}
