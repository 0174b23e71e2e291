use super::*;

const GOOD: &str = r#"
name = "r1-disagg"

[model]
name = "deepseek-ai/DeepSeek-R1"
params_b = 671.0
active_params_b = 37.0
dtype = "fp8"

[engine]
kind = "sglang"

[deploy]
mode = "disaggregated"

[deploy.prefill]
gpus = 4
count = 8

[deploy.decode]
gpus = 8
tp = 8
dp = 8
ep = 8
count = 4
"#;

fn err(text: &str) -> String {
    parse("r.toml", text).unwrap_err().to_string()
}

#[test]
fn a_good_recipe_parses_with_defaults() {
    let r = parse("r.toml", GOOD).unwrap();
    assert_eq!(r.deploy.base_port, 30_000);
    assert_eq!(r.deploy.frontend.port, 8000);
    assert_eq!(r.deploy.prefill.as_ref().unwrap().tp(), 4);
    assert_eq!(r.model.dtype, Dtype::Fp8);
}

#[test]
fn misspelt_table_key_suggests() {
    let text = GOOD.replace("[deploy.decode]", "[deploy.decdoe]");
    let e = err(&text);
    assert!(
        e.starts_with("r.toml:20:9: unknown key `decdoe` in `[deploy]`; did you mean \"decode\"?"),
        "{e}"
    );
}

#[test]
fn misspelt_key_names_value_and_suggests() {
    let text = GOOD.replace("count = 8", "cuont = 8");
    let e = err(&text);
    assert_eq!(
        e,
        "r.toml:18:1: unknown key `cuont` in `[deploy.prefill]` (value `8`); did you mean \"count\"?"
    );
}

#[test]
fn misspelt_variant_suggests() {
    let e = err(&GOOD.replace("\"sglang\"", "\"sglan\""));
    assert!(
        e.starts_with("r.toml:11:8: `engine.kind` cannot be \"sglan\"; did you mean \"sglang\"?"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_key_and_value() {
    let e = err(&GOOD.replace("gpus = 4", "gpus = \"four\""));
    assert!(
        e.starts_with("r.toml:17:8: `deploy.prefill.gpus` has the wrong type"),
        "{e}"
    );
    assert!(e.contains("given `\"four\"`"), "{e}");
}

#[test]
fn impossible_values_are_located() {
    let e = err(&GOOD.replace("tp = 8", "tp = 3"));
    assert_eq!(
        e,
        "r.toml:22:1: `deploy.decode.tp` must divide `deploy.decode.gpus` (8); given 3"
    );
    let e = err(&GOOD.replace("count = 4", "per_domain = 1"));
    assert!(e.contains("both use `count` or both `per_domain`"), "{e}");
    let e = err(&GOOD.replace("mode = \"disaggregated\"", "mode = \"aggregated\""));
    assert!(e.contains("does not apply"), "{e}");
    let e = err(&GOOD.replace("active_params_b = 37.0", "active_params_b = 700.0"));
    assert!(e.starts_with("r.toml:7:1: `model.active_params_b`"), "{e}");
}

#[test]
fn bench_and_slurm_tables_are_strict() {
    let ok = format!("{GOOD}\n[bench]\n\n[slurm]\n");
    assert!(parse("r.toml", &ok).is_ok());
    let e = err(&format!("{GOOD}\n[slurm]\npartiton = \"gpu\"\n"));
    assert!(
        e.contains("unknown key `partiton` in `[slurm]`")
            && e.contains("did you mean \"partition\"?"),
        "{e}"
    );
}

#[test]
fn missing_key_is_named() {
    let e = err(&GOOD.replace("kind = \"sglang\"", ""));
    assert!(e.contains("`[engine]` needs the key `kind`"), "{e}");
}

#[test]
fn syntax_errors_keep_their_position() {
    let e = err("name = \n");
    assert!(e.starts_with("r.toml:1:"), "{e}");
}

#[test]
fn hf_config_fills_missing_fields() {
    let dir = std::env::temp_dir().join(format!("cohort-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"num_hidden_layers": 61, "num_key_value_heads": 128, "hidden_size": 7168, "num_attention_heads": 128}"#,
    )
    .unwrap();
    let text = GOOD.replace(
        "dtype = \"fp8\"",
        "dtype = \"fp8\"\nconfig = \"config.json\"\nlayers = 60",
    );
    std::fs::write(dir.join("r.toml"), &text).unwrap();
    let r = load(&dir.join("r.toml")).unwrap();
    assert_eq!(r.model.layers, Some(60), "the recipe wins");
    assert_eq!(r.model.kv_heads, Some(128));
    assert_eq!(r.model.head_dim, Some(56));
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = load(&dir.join("r.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read `model.config`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

const CONTAINER: &str = r#"
[engine.container]
runtime = "pyxis"
image = "nvcr.io#nvidia/ai-dynamo/sglang-runtime:0.4.1"
mounts = ["/lustre/models:/lustre/models:ro", "/scratch/cache:/cache"]
env = ["HF_TOKEN"]
"#;

/// `GOOD` with `[engine.container]`, one line of it replaced.
fn contained(from: &str, to: &str) -> String {
    let table = CONTAINER.replace(from, to);
    assert_ne!(table, CONTAINER, "`{from}` is not in the table");
    format!("{GOOD}{table}")
}

/// The 1-based line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines().position(|l| l.starts_with(start)).unwrap() + 1
}

#[test]
fn container_table_parses_with_defaults() {
    use cohort_rank::engine::container::Runtime;
    assert_eq!(parse("r.toml", GOOD).unwrap().engine.container, None);
    let r = parse("r.toml", &format!("{GOOD}{CONTAINER}")).unwrap();
    let c = r.engine.container.unwrap();
    assert_eq!(c.runtime, Runtime::Pyxis);
    assert_eq!(c.image, "nvcr.io#nvidia/ai-dynamo/sglang-runtime:0.4.1");
    assert_eq!(c.mounts.len(), 2);
    assert_eq!(c.env, ["HF_TOKEN"]);
    assert!(!c.writable, "the runtime's own default unless asked");
    assert!(c.args.is_empty());
    let r = parse(
        "r.toml",
        &contained(
            "runtime = \"pyxis\"",
            "runtime = \"apptainer\"\nwritable = true",
        )
        .replace("nvcr.io#nvidia", "docker://nvcr.io/nvidia"),
    )
    .unwrap();
    assert_eq!(r.engine.container.unwrap().runtime, Runtime::Apptainer);
}

#[test]
fn container_errors_name_the_key_line_and_value() {
    let text = contained(
        "image = \"nvcr.io#nvidia/ai-dynamo/sglang-runtime:0.4.1\"",
        "image = \"\"",
    );
    let e = err(&text);
    let line = line_of(&text, "image");
    assert!(
        e.starts_with(&format!(
            "r.toml:{line}:1: `engine.container.image` must name the image: an enroot reference"
        )),
        "{e}"
    );
    assert!(e.ends_with("given ``"), "{e}");

    let text = contained("\"/scratch/cache:/cache\"", "\"cache:/cache\"");
    let e = err(&text);
    let line = line_of(&text, "mounts");
    assert!(
        e.starts_with(&format!(
            "r.toml:{line}:1: `engine.container.mounts` entries are `SRC:DST` or `SRC:DST:ro`"
        )),
        "{e}"
    );
    assert!(e.ends_with("given `cache:/cache`"), "{e}");

    // A read-only flag misspelt, two mounts on one path.
    let e = err(&contained(":ro\"", ":r\""));
    assert!(e.contains("given `/lustre/models:/lustre/models:r`"), "{e}");
    let e = err(&contained(
        "/scratch/cache:/cache",
        "/scratch/cache:/lustre/models",
    ));
    assert!(
        e.contains("mounts a second directory at `/lustre/models`"),
        "{e}"
    );

    let e = err(&contained("[\"HF_TOKEN\"]", "[\"HF-TOKEN\"]"));
    assert!(
        e.contains("`engine.container.env` entries are names of host variables"),
        "{e}"
    );
    assert!(e.ends_with("given `HF-TOKEN`"), "{e}");
}

#[test]
fn container_image_must_suit_its_runtime() {
    // enroot starts files and containers, not registry references.
    let e = err(&contained("runtime = \"pyxis\"", "runtime = \"enroot\""));
    assert!(
        e.contains("`engine.container.image` is a registry reference"),
        "{e}"
    );
    assert!(e.contains("enroot import"), "{e}");
    // Apptainer spells registries as URIs.
    let e = err(&contained("runtime = \"pyxis\"", "runtime = \"apptainer\""));
    assert!(e.contains("Apptainer reads `docker://"), "{e}");
    let e = err(&contained("runtime = \"pyxis\"", "runtime = \"docker\""));
    assert!(
        e.contains("`engine.container.runtime` cannot be \"docker\"") && e.contains("`pyxis`"),
        "{e}"
    );
}

#[test]
fn container_table_is_strict() {
    let e = err(&contained("mounts =", "mount ="));
    assert!(
        e.contains("unknown key `mount` in `[engine.container]`")
            && e.contains("did you mean \"mounts\"?"),
        "{e}"
    );
    // Options cohort sets itself cannot come in through `args`.
    let text = contained(
        "env = [\"HF_TOKEN\"]",
        "args = [\"--container-mounts=/a:/a\"]",
    );
    let e = err(&text);
    let line = line_of(&text, "args");
    assert!(
        e.starts_with(&format!(
            "r.toml:{line}:1: `engine.container.args` repeats `--container-mounts`"
        )),
        "{e}"
    );
    // Nothing to start, nothing to contain.
    let e = err(&format!("{GOOD}{CONTAINER}").replace("kind = \"sglang\"", "kind = \"external\""));
    assert!(
        e.contains("does not apply to `engine.kind = \"external\"`"),
        "{e}"
    );
}

#[test]
fn container_needs_a_mountable_model_path() {
    let with_path = |path: &str| {
        format!("{GOOD}{CONTAINER}").replace(
            "dtype = \"fp8\"",
            &format!("dtype = \"fp8\"\npath = \"{path}\""),
        )
    };
    assert!(parse("r.toml", &with_path("/lustre/models/DeepSeek-R1")).is_ok());
    let text = with_path("weights/DeepSeek-R1");
    let e = err(&text);
    let line = line_of(&text, "path");
    assert!(
        e.starts_with(&format!(
            "r.toml:{line}:1: `model.path` must be an absolute path"
        )),
        "{e}"
    );
    assert!(e.ends_with("given `weights/DeepSeek-R1`"), "{e}");
    // Without a container the path is the engine's business.
    let bare = GOOD.replace(
        "dtype = \"fp8\"",
        "dtype = \"fp8\"\npath = \"weights/DeepSeek-R1\"",
    );
    assert!(parse("r.toml", &bare).is_ok());
}

proptest::proptest! {
    /// Arbitrary text never panics the parser, and every error names the file.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        if let Err(e) = parse("f.toml", &text) {
            proptest::prop_assert!(e.to_string().starts_with("f.toml"));
        }
    }

    /// Mutations of a good recipe (a byte dropped, a line duplicated) never panic.
    #[test]
    fn mutated_recipes_never_panic(cut in 0usize..GOOD.len(), dup in 0usize..30) {
        let mut t = GOOD.to_owned();
        if t.is_char_boundary(cut) {
            t.remove(cut);
        }
        let lines: Vec<&str> = GOOD.lines().collect();
        let extra = lines[dup % lines.len()];
        let t2 = format!("{GOOD}\n{extra}\n");
        let _ = parse("f.toml", &t);
        let _ = parse("f.toml", &t2);
    }
}
