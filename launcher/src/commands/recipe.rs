//! `cohort recipe …`: recipe files.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;

use crate::recipe;

#[derive(Debug, Subcommand)]
pub(crate) enum RecipeCommand {
    /// Check a recipe strictly: unknown keys, wrong types and impossible values are
    /// errors with file:line:column, the key, the value and a suggestion
    #[command(after_help = "Example: cohort recipe check recipes/gb200-nvl72-disagg.toml")]
    Check {
        /// The recipe file
        file: PathBuf,
    },
}

pub(crate) fn run(cmd: &RecipeCommand) -> anyhow::Result<()> {
    match cmd {
        RecipeCommand::Check { file } => {
            let r = recipe::load(file)?;
            let mut out = std::io::stdout().lock();
            let roles: Vec<String> = [
                ("prefill", &r.deploy.prefill),
                ("decode", &r.deploy.decode),
                ("aggregated", &r.deploy.aggregated),
            ]
            .into_iter()
            .filter_map(|(name, s)| {
                let s = s.as_ref()?;
                let n = match (s.count, s.per_domain) {
                    (Some(c), _) => format!("{c}"),
                    (_, Some(p)) => format!("{p} per NVLink domain"),
                    _ => "?".to_owned(),
                };
                Some(format!(
                    "{n} {name} × {} GPU{} (tp {})",
                    s.gpus,
                    if s.gpus == 1 { "" } else { "s" },
                    s.tp()
                ))
            })
            .collect();
            writeln!(
                out,
                "{}: ok — `{}`: {} on {}; {}",
                file.display(),
                r.name,
                r.model.name,
                r.engine.kind.name(),
                roles.join(", ")
            )?;
        }
    }
    Ok(())
}
