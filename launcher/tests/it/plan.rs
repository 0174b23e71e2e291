//! `cohort plan`: golden plans for NVL72 and HGX, `--json`, `--svg`, `--exclude`, and
//! refusals in numbers.

use crate::fixtures::{cohort, repo_root, stderr, stdout, TempDir};

fn plan(args: &[&str]) -> std::process::Output {
    cohort()
        .current_dir(repo_root())
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn nvl72_two_racks_golden() {
    let out = plan(&["--recipe", "recipes/gb200-nvl72-disagg.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("nvl72_two_racks", stdout(&out));
}

#[test]
fn hgx_h100_golden() {
    let out = plan(&["--recipe", "recipes/hgx-h100-disagg.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("hgx_h100_four_nodes", stdout(&out));
}

#[test]
fn json_plan_keeps_kv_inside_each_rack() {
    let out = plan(&["--recipe", "recipes/gb200-nvl72-disagg.toml", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let instances = p["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 24);
    let domain_of = |id: &str| {
        instances
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["domain"].as_str().unwrap().to_owned())
            .unwrap()
    };
    for i in instances.iter().filter(|i| i["role"] == "prefill") {
        let feeds = i["feeds"].as_array().unwrap();
        assert!(!feeds.is_empty());
        for f in feeds {
            assert_eq!(
                domain_of(f.as_str().unwrap()),
                i["domain"].as_str().unwrap()
            );
        }
    }
    assert_eq!(p["summary"]["prefill_local_share"], 1.0);
    assert!(p["cross_domain"].as_array().unwrap().is_empty());
}

#[test]
fn svg_draws_every_gpu_and_instance() {
    let dir = TempDir::new("plan-svg");
    let svg = dir.path().join("plan.svg");
    let out = plan(&[
        "--recipe",
        "recipes/gb200-nvl72-disagg.toml",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    assert_eq!(text.matches("<title>").count(), 144, "one cell per GPU");
    assert_eq!(text.matches(": decode-").count(), 64);
    assert_eq!(
        text.matches(r#"stroke-width="1.6""#).count(),
        24,
        "one outline per instance"
    );
}

#[test]
fn hgx_binds_numa_local_cores() {
    let out = plan(&["--recipe", "recipes/hgx-h100-disagg.toml", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for i in p["instances"].as_array().unwrap() {
        let s = &i["shards"][0];
        let gpus: Vec<u64> = s["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_u64().unwrap())
            .collect();
        let (numa, cpus) = if gpus == [0, 1, 2, 3] {
            (0, ["-55", "-167"])
        } else {
            assert_eq!(gpus, [4, 5, 6, 7]);
            (1, ["56-111", "168-223"])
        };
        assert_eq!(s["mem_nodes"], serde_json::json!([numa]));
        let c = s["cpus"].as_str().unwrap();
        assert!(cpus.iter().all(|part| c.contains(part)), "{c}");
    }
}

#[test]
fn exclude_replans_and_names_unknown_nodes() {
    let out = plan(&[
        "--recipe",
        "recipes/hgx-h100-disagg.toml",
        "--exclude",
        "h100-00[1-2]",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(!table.contains("h100-001  0-3"), "{table}");
    assert!(table.contains("frontend   h100-003:8000"), "{table}");
    assert!(table.contains("excluded   h100-[001-002]"), "{table}");
    let out = plan(&[
        "--recipe",
        "recipes/hgx-h100-disagg.toml",
        "--exclude",
        "gpu9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`--exclude` names `gpu9`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn infeasible_plans_say_why_in_numbers_and_print_nothing() {
    let out = plan(&[
        "--recipe",
        "recipes/gb200-nvl72-disagg.toml",
        "--topology",
        "recipes/topologies/hgx-h100-4nodes.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty(), "never a partial plan");
    insta::assert_snapshot!("infeasible_total", stderr(&out));
    let out = plan(&[
        "--recipe",
        "recipes/hgx-h100-disagg.toml",
        "--topology",
        "recipes/topologies/cpu-only.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("this allocation has no GPUs"),
        "{}",
        stderr(&out)
    );
}
