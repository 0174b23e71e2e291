//! The real engines' adapters (`vllm`, `sglang`, `trtllm`): the exact command lines and
//! environments they produce, as snapshots, and the properties those must keep.
//!
//! No engine runs here; `docs/launch.md` ("Real engines") says what each flag is for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cohort_rank::engine::sglang::SglangEngine;
use cohort_rank::engine::trtllm::TrtllmEngine;
use cohort_rank::engine::vllm::VllmEngine;
use cohort_rank::engine::{
    Engine, EngineConfig, EngineContext, Handshake, InstanceSpec, LaunchSpec, MultiNode, Role,
};
use serde::Serialize;

const ROLES: [Role; 3] = [Role::Prefill, Role::Decode, Role::Aggregated];

/// An instance as the launcher fills it: node address `10.1.2.3`, block at 30010.
fn spec(role: Role) -> InstanceSpec {
    let id = match role {
        Role::Prefill => "prefill-0",
        Role::Decode => "decode-0",
        Role::Aggregated => "aggregated-0",
    };
    InstanceSpec {
        id: id.into(),
        role,
        host: "10.1.2.3".into(),
        port: 30010,
        kv_events_port: Some(30011),
        gpus: vec![0, 1, 2, 3],
        cpus: None,
        mem_nodes: vec![],
        model: "deepseek-ai/DeepSeek-R1".into(),
        tp: 4,
        nvlink_domain: "nvl72-rack0".into(),
        extra_args: vec!["--trust-remote-code".into()],
        env: vec![],
        served_model_name: None,
        multi_node: None,
    }
}

/// Node `rank` of an instance over two trays whose leader is `10.1.2.3:30010`.
fn node(rank: u32) -> MultiNode {
    MultiNode {
        nnodes: 2,
        node_rank: rank,
        leader_host: "10.1.2.3".into(),
        leader_port: 30010,
    }
}

/// The leader's spec of an instance of TP 8 over two 4-GPU trays (`tp` is the
/// instance's, not the node's).
fn leader_spec(role: Role) -> InstanceSpec {
    InstanceSpec {
        tp: 8,
        ..spec(role)
    }
}

/// A follower's own spec: its node's address and GPUs, the same port block number.
fn follower_spec(role: Role) -> InstanceSpec {
    InstanceSpec {
        host: "10.1.2.4".into(),
        ..leader_spec(role)
    }
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

fn launch(engine: &dyn Engine, spec: &InstanceSpec) -> LaunchSpec {
    engine
        .launch(&EngineContext { instance: spec })
        .expect("a real engine starts a process")
}

/// The value after `flag`, which must be there.
fn flag<'a>(l: &'a LaunchSpec, flag: &str) -> &'a str {
    let at = l
        .args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no `{flag}` in {:?}", l.args));
    &l.args[at + 1]
}

fn env<'a>(l: &'a LaunchSpec, name: &str) -> Option<&'a str> {
    l.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------- snapshots

#[test]
fn vllm_command_lines() {
    let e = VllmEngine::default();
    for role in ROLES {
        let s = spec(role);
        let name = role.name();
        insta::assert_json_snapshot!(format!("vllm_{name}"), snap(&launch(&e, &s)));
        let l = leader_spec(role);
        let ctx = EngineContext { instance: &l };
        insta::assert_json_snapshot!(
            format!("vllm_{name}_leader"),
            snap(&e.launch_node(&ctx, Some(&node(0))))
        );
        let f = follower_spec(role);
        let fctx = EngineContext { instance: &f };
        insta::assert_json_snapshot!(
            format!("vllm_{name}_follower"),
            snap(&e.launch_node(&fctx, Some(&node(1))))
        );
    }
}

#[test]
fn sglang_command_lines() {
    let e = SglangEngine::default();
    for role in ROLES {
        let s = spec(role);
        let name = role.name();
        insta::assert_json_snapshot!(format!("sglang_{name}"), snap(&launch(&e, &s)));
        let l = leader_spec(role);
        let ctx = EngineContext { instance: &l };
        insta::assert_json_snapshot!(
            format!("sglang_{name}_leader"),
            snap(&e.launch_node(&ctx, Some(&node(0))))
        );
        let f = follower_spec(role);
        let fctx = EngineContext { instance: &f };
        insta::assert_json_snapshot!(
            format!("sglang_{name}_follower"),
            snap(&e.launch_node(&fctx, Some(&node(1))))
        );
    }
}

#[test]
fn trtllm_command_lines() {
    let e = TrtllmEngine {
        config_dir: Some("/results/42/logs/gpu07".into()),
        ..TrtllmEngine::default()
    };
    for role in ROLES {
        let s = InstanceSpec {
            // `trtllm-serve`'s flags are spelled with underscores.
            extra_args: vec!["--trust_remote_code".into()],
            ..spec(role)
        };
        insta::assert_json_snapshot!(format!("trtllm_{}", role.name()), snap(&launch(&e, &s)));
    }
}

// ---------------------------------------------------------------- behaviour

#[test]
fn nixl_side_channel_is_the_cluster_address_and_a_port_of_its_own() {
    let e = VllmEngine::default();
    let mut seen = Vec::new();
    for (n, host) in [(0u16, "10.1.2.3"), (1, "10.1.2.3"), (2, "10.1.2.9")] {
        let s = InstanceSpec {
            id: format!("prefill-{n}"),
            host: host.into(),
            port: 30000 + 10 * n,
            kv_events_port: Some(30001 + 10 * n),
            ..spec(Role::Prefill)
        };
        let l = launch(&e, &s);
        assert_eq!(env(&l, "VLLM_NIXL_SIDE_CHANNEL_HOST"), Some(host));
        let port: u16 = env(&l, "VLLM_NIXL_SIDE_CHANNEL_PORT")
            .unwrap()
            .parse()
            .unwrap();
        // Inside its own block, clear of HTTP and KV events.
        assert_eq!(port, s.port + 2);
        assert!(port != s.port && Some(port) != s.kv_events_port);
        seen.push((host, port));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        3,
        "two instances share a side channel: {seen:?}"
    );
    // Aggregated instances transfer nothing.
    let l = launch(&e, &spec(Role::Aggregated));
    assert_eq!(env(&l, "VLLM_NIXL_SIDE_CHANNEL_HOST"), None);
    assert!(!l.args.iter().any(|a| a == "--kv-transfer-config"));
}

#[test]
fn kv_events_endpoint_binds_with_a_wildcard() {
    let engines: [&dyn Engine; 2] = [&VllmEngine::default(), &SglangEngine::default()];
    for e in engines {
        for role in ROLES {
            let l = launch(e, &spec(role));
            let cfg: serde_json::Value =
                serde_json::from_str(flag(&l, "--kv-events-config")).unwrap();
            // A concrete address would make the publisher connect instead of bind.
            assert_eq!(cfg["endpoint"], "tcp://*:30011", "{}", e.name());
            assert_eq!(cfg["publisher"], "zmq");
            assert_eq!(cfg["enable_kv_cache_events"], true);
            assert_eq!(cfg["topic"], "");
        }
        // No port from the launcher: no events.
        let s = InstanceSpec {
            kv_events_port: None,
            ..spec(Role::Decode)
        };
        let l = launch(e, &s);
        assert!(!l.args.iter().any(|a| a == "--kv-events-config"));
        let ep = e.endpoints(&EngineContext { instance: &s });
        assert_eq!(ep.kv_events_url, None);
    }
}

#[test]
fn recipe_arguments_come_last() {
    let engines: [&dyn Engine; 3] = [
        &VllmEngine::default(),
        &SglangEngine::default(),
        &TrtllmEngine::default(),
    ];
    for e in engines {
        for role in ROLES {
            let s = InstanceSpec {
                extra_args: vec!["--max-num-seqs".into(), "64".into()],
                ..spec(role)
            };
            let l = launch(e, &s);
            assert_eq!(
                l.args[l.args.len() - 2..],
                ["--max-num-seqs", "64"],
                "{} {role:?}",
                e.name()
            );
        }
    }
    // Also on every node of a multi-node instance.
    let s = InstanceSpec {
        extra_args: vec!["--enforce-eager".into()],
        ..leader_spec(Role::Decode)
    };
    let ctx = EngineContext { instance: &s };
    for rank in [0, 1] {
        let v = VllmEngine::default().launch_node(&ctx, Some(&node(rank)));
        assert_eq!(v.args.last().unwrap(), "--enforce-eager");
        let g = SglangEngine::default().launch_node(&ctx, Some(&node(rank)));
        assert_eq!(g.args.last().unwrap(), "--enforce-eager");
    }
}

#[test]
fn endpoints_are_the_instance_urls() {
    let s = spec(Role::Prefill);
    let ctx = EngineContext { instance: &s };
    for e in [
        &VllmEngine::default() as &dyn Engine,
        &SglangEngine::default(),
    ] {
        let ep = e.endpoints(&ctx);
        assert_eq!(ep.url, "http://10.1.2.3:30010", "{}", e.name());
        assert_eq!(ep.health_url, "http://10.1.2.3:30010/health");
        assert_eq!(
            ep.metrics_url.as_deref(),
            Some("http://10.1.2.3:30010/metrics")
        );
        assert_eq!(ep.kv_events_url.as_deref(), Some("tcp://10.1.2.3:30011"));
    }
    let ep = TrtllmEngine::default().endpoints(&ctx);
    assert_eq!(ep.url, "http://10.1.2.3:30010");
    assert_eq!(ep.health_url, "http://10.1.2.3:30010/health");
    assert_eq!(ep.metrics_url, None);
    assert_eq!(
        ep.kv_events_url, None,
        "TensorRT-LLM publishes no KV events"
    );
}

#[test]
fn a_follower_is_reached_through_its_leader() {
    let f = follower_spec(Role::Decode);
    let ctx = EngineContext { instance: &f };
    let v = VllmEngine::default();
    let ep = v.endpoints_node(&ctx, Some(&node(1)));
    assert_eq!(ep.health_url, "http://10.1.2.3:30010/health");
    assert_eq!(ep.kv_events_url.as_deref(), Some("tcp://10.1.2.3:30011"));
    // The leader is reached at its own address.
    let s = leader_spec(Role::Decode);
    let ep = v.endpoints_node(&EngineContext { instance: &s }, Some(&node(0)));
    assert_eq!(ep.url, "http://10.1.2.3:30010");

    // vLLM: followers are headless and publish nothing; everyone meets at the
    // leader's block + 3.
    let l = v.launch_node(&ctx, Some(&node(1)));
    assert!(l.args.iter().any(|a| a == "--headless"));
    assert!(!l.args.iter().any(|a| a == "--kv-events-config"));
    assert_eq!(flag(&l, "--master-addr"), "10.1.2.3");
    assert_eq!(flag(&l, "--master-port"), "30013");
    let l = v.launch_node(&EngineContext { instance: &s }, Some(&node(0)));
    assert!(!l.args.iter().any(|a| a == "--headless"));

    // SGLang: the same rendezvous on every node, and the leader's bootstrap port.
    let p = InstanceSpec {
        port: 30050,
        ..follower_spec(Role::Prefill)
    };
    let l = SglangEngine::default().launch_node(&EngineContext { instance: &p }, Some(&node(1)));
    assert_eq!(flag(&l, "--dist-init-addr"), "10.1.2.3:30013");
    assert_eq!(flag(&l, "--disaggregation-bootstrap-port"), "30012");
    assert_eq!(flag(&l, "--node-rank"), "1");
}

#[test]
fn mnnvl_only_where_an_instance_spans_nodes_of_one_nvlink_domain() {
    let s = leader_spec(Role::Decode);
    let ctx = EngineContext { instance: &s };
    let v = VllmEngine::default();
    assert_eq!(env(&v.launch_node(&ctx, None), "NCCL_MNNVL_ENABLE"), None);
    assert_eq!(
        env(&v.launch_node(&ctx, Some(&node(0))), "NCCL_MNNVL_ENABLE"),
        Some("1")
    );
    let no_domain = InstanceSpec {
        nvlink_domain: String::new(),
        ..leader_spec(Role::Decode)
    };
    let l = v.launch_node(
        &EngineContext {
            instance: &no_domain,
        },
        Some(&node(0)),
    );
    assert_eq!(env(&l, "NCCL_MNNVL_ENABLE"), None);

    // Mooncake over NVLink only when asked, and only for prefill and decode.
    let g = SglangEngine {
        mooncake_mnnvl: true,
        ..SglangEngine::default()
    };
    assert_eq!(env(&launch(&g, &s), "MC_FORCE_MNNVL"), Some("True"));
    assert_eq!(
        env(&launch(&g, &s), "SGLANG_MOONCAKE_CUSTOM_MEM_POOL"),
        Some("True")
    );
    assert_eq!(
        env(&launch(&g, &spec(Role::Aggregated)), "MC_FORCE_MNNVL"),
        None
    );
    assert_eq!(
        env(&launch(&SglangEngine::default(), &s), "MC_FORCE_MNNVL"),
        None
    );
}

#[test]
fn trtllm_writes_its_options_then_becomes_the_engine() {
    let e = TrtllmEngine {
        config_dir: Some("/logs".into()),
        llm_api_options: serde_json::from_str(
            r#"{"kv_cache_config": {"enable_block_reuse": true}}"#,
        )
        .unwrap(),
        ..TrtllmEngine::default()
    };
    let l = launch(&e, &spec(Role::Prefill));
    assert_eq!(l.program, PathBuf::from("/bin/sh"));
    assert!(l.args[1].contains("exec \"$@\""), "{:?}", l.args);
    // `$1` is the file `trtllm-serve` is pointed at.
    assert_eq!(l.args[3], "/logs/prefill-0-30010.trtllm.yaml");
    assert_eq!(flag(&l, "--config"), l.args[3]);
    assert_eq!(l.args[4], "trtllm-serve");
    let options: serde_json::Value =
        serde_json::from_str(env(&l, "COHORT_TRTLLM_CONFIG").unwrap()).unwrap();
    assert_eq!(options["cache_transceiver_config"]["backend"], "DEFAULT");
    assert_eq!(options["disable_overlap_scheduler"], true);
    assert_eq!(options["kv_cache_config"]["enable_block_reuse"], true);

    // Nothing to write: `trtllm-serve` itself.
    let l = launch(&TrtllmEngine::default(), &spec(Role::Aggregated));
    assert_eq!(l.program, PathBuf::from("trtllm-serve"));
    assert!(!l.args.iter().any(|a| a == "--config"));
}

#[test]
fn configs_parse_with_defaults_and_refuse_unknown_keys() {
    let c: EngineConfig = serde_json::from_str(r#"{"type": "vllm"}"#).unwrap();
    assert_eq!(c, EngineConfig::Vllm(VllmEngine::default()));
    let s = spec(Role::Decode);
    let ctx = EngineContext { instance: &s };
    for (json, name, handshake) in [
        (
            r#"{"type": "vllm"}"#,
            "vllm",
            Handshake::VllmKvTransferParams,
        ),
        (
            r#"{"type": "sglang"}"#,
            "sglang",
            Handshake::SglangBootstrap,
        ),
        (
            r#"{"type": "trtllm"}"#,
            "trtllm",
            Handshake::TrtllmDisaggregatedParams,
        ),
    ] {
        let engine = serde_json::from_str::<EngineConfig>(json).unwrap().build();
        assert_eq!(engine.name(), name);
        assert_eq!(engine.handshake(), handshake);
        assert_eq!(engine.ready_deadline(&ctx), Duration::from_secs(1800));
    }
    let c: EngineConfig = serde_json::from_str(
        r#"{"type": "sglang", "python": "/opt/venv/bin/python", "ready_deadline_s": 600,
            "transfer_backend": "nixl", "env": {"SGLANG_LOCAL_IP_NIC": "ib0"}}"#,
    )
    .unwrap();
    let engine = c.build();
    assert_eq!(engine.ready_deadline(&ctx), Duration::from_secs(600));
    let l = launch(engine.as_ref(), &s);
    assert_eq!(l.program, PathBuf::from("/opt/venv/bin/python"));
    assert_eq!(flag(&l, "--disaggregation-transfer-backend"), "nixl");
    assert_eq!(env(&l, "SGLANG_LOCAL_IP_NIC"), Some("ib0"));

    for json in [
        r#"{"type": "vllm", "programme": "vllm"}"#,
        r#"{"type": "sglang", "program": "python3"}"#,
        r#"{"type": "trtllm", "tp_size": 4}"#,
    ] {
        let err = serde_json::from_str::<EngineConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{json}: {err}");
    }
}

#[test]
fn configured_environment_wins() {
    let e = VllmEngine {
        env: [(
            "VLLM_NIXL_SIDE_CHANNEL_HOST".to_owned(),
            "10.9.9.9".to_owned(),
        )]
        .into(),
        ..VllmEngine::default()
    };
    let l = launch(&e, &spec(Role::Prefill));
    assert_eq!(env(&l, "VLLM_NIXL_SIDE_CHANNEL_HOST"), Some("10.9.9.9"));
    // Each variable once.
    let mut names: Vec<_> = l.env.iter().map(|(k, _)| k).collect();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
}

#[test]
fn trtllm_wrapper_runs() {
    // The wrapper for real, with `echo` as the engine: the file holds the options and
    // the engine gets exactly its arguments.
    let dir = std::env::temp_dir().join(format!("cohort-engines-trtllm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = TrtllmEngine {
        program: "echo".into(),
        config_dir: Some(dir.clone()),
        ..TrtllmEngine::default()
    };
    let l = launch(&e, &spec(Role::Decode));
    let out = std::process::Command::new(&l.program)
        .args(&l.args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let file = dir.join("decode-0-30010.trtllm.yaml");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["cache_transceiver_config"]["backend"], "DEFAULT");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "deepseek-ai/DeepSeek-R1 --host 10.1.2.3 --port 30010 --tp_size 4 --config {} --trust-remote-code",
            file.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the launcher puts in a spec is what the adapters use: a follower's place in its
/// instance (`multi_node`), and the served name of a model given as a local path.
#[test]
fn the_spec_carries_the_node_place_and_the_served_name() {
    let follower = InstanceSpec {
        multi_node: Some(node(1)),
        ..follower_spec(Role::Decode)
    };
    let ctx = EngineContext {
        instance: &follower,
    };
    let v = VllmEngine::default();
    assert_eq!(v.launch(&ctx), Some(v.launch_node(&ctx, Some(&node(1)))));
    assert_eq!(v.endpoints(&ctx).url, "http://10.1.2.3:30010");
    let g = SglangEngine::default();
    assert_eq!(g.launch(&ctx), Some(g.launch_node(&ctx, Some(&node(1)))));
    // The simulator serves a multi-node instance from its leader alone.
    let sim = cohort_rank::engine::sim::SimEngine::new("/opt/cohort".into());
    assert_eq!(sim.launch(&ctx), None);
    assert_eq!(
        sim.endpoints(&ctx).health_url,
        "http://10.1.2.3:30010/health"
    );

    let local = InstanceSpec {
        model: "/models/llama-3.1-70b".into(),
        served_model_name: Some("meta-llama/Llama-3.1-70B-Instruct".into()),
        ..spec(Role::Aggregated)
    };
    let ctx = EngineContext { instance: &local };
    for l in [v.launch(&ctx).unwrap(), g.launch(&ctx).unwrap()] {
        assert_eq!(
            flag(&l, "--served-model-name"),
            "meta-llama/Llama-3.1-70B-Instruct"
        );
        assert!(l.args.iter().any(|a| a == "/models/llama-3.1-70b"));
    }
}
