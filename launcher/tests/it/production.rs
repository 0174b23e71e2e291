//! The production recipes in `recipes/`: every engine command each would start, inside
//! its container and bare (`cohort plan --commands`), and its batch script (`cohort
//! sbatch`), as snapshots — the exact command lines a job runs — plus the properties
//! those must keep whatever the snapshots say.

use std::process::Output;

use crate::fixtures::{cohort, repo_root, stderr, stdout};

/// Each production recipe and the nodes its topology has.
const RECIPES: [(&str, usize); 4] = [
    ("deepseek-r1-gb200-sglang", 18),
    ("hgx-h100-disagg", 4),
    ("qwen3-32b-h200-trtllm-agg", 2),
    ("qwen3-32b-h200-trtllm-disagg", 2),
];

fn run(args: &[&str]) -> Output {
    let out = cohort()
        .current_dir(repo_root())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "cohort {args:?}: {}", stderr(&out));
    out
}

/// The blocks of `--commands` output: (header, body).
fn blocks(text: &str) -> Vec<(&str, &str)> {
    text.split("\n## ")
        .skip(1)
        .map(|b| b.split_once('\n').unwrap_or((b, "")))
        .collect()
}

#[test]
fn production_recipes_commands_in_their_container_and_bare() {
    for (name, nodes) in RECIPES {
        let recipe = format!("recipes/{name}.toml");
        let boxed = stdout(&run(&["plan", "--recipe", &recipe, "--commands"]));
        let bare = stdout(&run(&["plan", "--recipe", &recipe, "--commands", "--bare"]));
        for text in [&boxed, &bare] {
            assert!(
                !text.contains("10.255."),
                "{name}: a stand-in address is left:\n{text}"
            );
            let parts = blocks(text);
            // Every node of the topology runs a part of some instance.
            let on: std::collections::BTreeSet<&str> = parts
                .iter()
                .filter_map(|(h, _)| h.split(" on ").nth(1))
                .map(|rest| rest.split([',', ':']).next().unwrap_or(rest))
                .collect();
            assert_eq!(on.len(), nodes, "{name}: nodes with a part: {on:?}");
            for (header, body) in &parts {
                // The GPU binding the header names is in the command's environment.
                let gpus = header.split("GPUs ").nth(1).unwrap_or_default();
                let gpus = gpus.split(", CPUs").next().unwrap_or(gpus);
                assert!(
                    body.contains(&format!("CUDA_VISIBLE_DEVICES={gpus}")),
                    "{name}: `{header}` lost its GPUs:\n{body}"
                );
            }
        }
        // In the container: each part starts through pyxis and binds its GPUs inside
        // (`env CUDA_VISIBLE_DEVICES=…` after the image); bare: no container at all.
        for (header, body) in blocks(&boxed) {
            assert!(
                body.contains("--container-image=") && body.contains("/usr/bin/env"),
                "{name}: `{header}` is not in its container:\n{body}"
            );
            assert!(
                body.contains("'CUDA_VISIBLE_DEVICES="),
                "{name}: `{header}` has no GPU binding inside the container:\n{body}"
            );
        }
        assert!(!bare.contains("--container-image"), "{name}:\n{bare}");
        insta::assert_snapshot!(format!("{name}_commands_container"), boxed);
        insta::assert_snapshot!(format!("{name}_commands_bare"), bare);
    }
}

#[test]
fn production_recipes_batch_scripts() {
    let root = repo_root().display().to_string();
    let exe = env!("CARGO_BIN_EXE_cohort");
    for (name, nodes) in RECIPES {
        let recipe = format!("recipes/{name}.toml");
        let script = stdout(&run(&["sbatch", &recipe]));
        assert!(
            script.contains(&format!("#SBATCH --nodes={nodes}")),
            "{name}:\n{script}"
        );
        let script = script
            .replace(exe, "/opt/cohort/bin/cohort")
            .replace(&root, "/opt/cohort/src");
        insta::assert_snapshot!(format!("{name}_sbatch"), script);
    }
}
