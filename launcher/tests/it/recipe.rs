//! `cohort recipe check`: shipped recipes pass; mistakes are located and explained.

use crate::fixtures::{cohort, repo_root, stderr, stdout, TempDir};

#[test]
fn every_shipped_recipe_checks() {
    let mut n = 0;
    for e in std::fs::read_dir(repo_root().join("recipes")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = cohort().args(["recipe", "check"]).arg(&p).output().unwrap();
            assert!(out.status.success(), "{}: {}", p.display(), stderr(&out));
            assert!(stdout(&out).contains(": ok"));
            n += 1;
        }
    }
    assert!(n >= 3);
}

/// Checks `text` as `bad.toml` and returns stderr with the temporary path removed.
fn check_error(text: &str) -> String {
    let dir = TempDir::new("recipe-check");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = cohort()
        .args(["recipe", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    stderr(&out).replace(&format!("{}/", dir.path().display()), "")
}

fn shipped() -> String {
    std::fs::read_to_string(repo_root().join("recipes/gb200-nvl72-disagg.toml")).unwrap()
}

#[test]
fn recipe_error_messages() {
    let cases = [
        (
            "misspelt_table",
            shipped().replace("[deploy.decode]", "[deploy.decdoe]"),
        ),
        (
            "misspelt_key",
            shipped().replace("count = 16", "cuont = 16"),
        ),
        (
            "misspelt_value",
            shipped().replace("kind = \"sglang\"", "kind = \"sgalng\""),
        ),
        ("wrong_type", shipped().replace("gpus = 4", "gpus = \"4\"")),
        ("impossible_tp", shipped().replace("tp = 8", "tp = 3")),
        (
            "bench_typo",
            format!("{}\n[bench]\nconcurency = [1, 8]\n", shipped()),
        ),
    ];
    let mut all = String::new();
    for (name, text) in cases {
        all.push_str(&format!("--- {name}\n{}", check_error(&text)));
    }
    insta::assert_snapshot!("recipe_errors", all);
}
