//! `cohort plan`: where a recipe's instances would go, without starting anything.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cohort_rank::topology::{discover, emulated, Topology};

use crate::{plan, recipe};

/// Arguments of `cohort plan` (parsed only; see [`PlanArgs::resolve`]).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: cohort plan --recipe recipes/gb200-nvl72-disagg.toml --svg plan.svg"
)]
pub(crate) struct PlanArgs {
    /// The recipe
    #[arg(long)]
    recipe: PathBuf,
    /// The topology: an emulated one (`recipes/topologies/*.toml`) or a `cohort topo
    /// --json` capture; default: the recipe's `deploy.topology`, else this node
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Print the plan as JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Also draw the plan as SVG into this file
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Leave these nodes out (a hostlist, e.g. nodes that failed a check)
    #[arg(long, value_name = "NODES")]
    exclude: Vec<String>,
    /// Print every engine command the job would start — environment, binding and
    /// arguments, per node, inside the recipe's container if it names one — instead of
    /// the table
    #[arg(long)]
    commands: bool,
    /// With `--commands`: the engine as installed on the nodes, without the recipe's
    /// `[engine.container]`
    #[arg(long, requires = "commands")]
    bare: bool,
}

/// Everything `plan` needs, read and checked.
#[derive(Debug)]
struct Settings {
    recipe: recipe::Recipe,
    topology: Topology,
    json: bool,
    svg: Option<PathBuf>,
    exclude: Vec<String>,
    commands: Option<crate::launch::Wrapping>,
}

impl PlanArgs {
    fn resolve(&self) -> anyhow::Result<Settings> {
        let recipe = recipe::load(&self.recipe)?;
        let topo_path = match (&self.topology, &recipe.deploy.topology) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(t)) => Some(self.recipe.parent().unwrap_or(Path::new(".")).join(t)),
            (None, None) => None,
        };
        let topology = match topo_path {
            Some(p) => load_topology(&p)?,
            None => discover::discover(&super::topo::discover_options()).topology,
        };
        let mut exclude = Vec::new();
        for e in &self.exclude {
            exclude.extend(
                cohort_slurm::hostlist::expand(e).with_context(|| format!("`--exclude {e}`"))?,
            );
        }
        Ok(Settings {
            recipe,
            topology,
            json: self.json,
            svg: self.svg.clone(),
            exclude,
            commands: self.commands.then_some(if self.bare {
                crate::launch::Wrapping::Bare
            } else {
                crate::launch::Wrapping::AsRecipe
            }),
        })
    }
}

/// Reads a topology: `.json` as `cohort topo --json` writes it, else an emulated one.
pub(crate) fn load_topology(path: &Path) -> anyhow::Result<Topology> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the topology `{}`", path.display()))?;
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e == "json") {
        // A capture of `cohort topo --json` holds the topology under `topology`.
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("`{name}` is not JSON"))?;
        let inner = value
            .get("topology")
            .map_or(text.clone(), ToString::to_string);
        Ok(Topology::from_json(&name, &inner)?)
    } else {
        Ok(emulated::from_toml(&name, &text)?)
    }
}

pub(crate) fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let s = args.resolve()?;
    let p = plan::plan(&s.topology, &s.recipe.deploy, &s.exclude)
        .with_context(|| format!("no plan for `{}` on `{}`", s.recipe.name, s.topology.source))?;
    if let Some(svg) = &s.svg {
        std::fs::write(svg, plan::render_svg(&p, &s.topology))
            .with_context(|| format!("cannot write `{}`", svg.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if let Some(wrapping) = s.commands {
        out.write_all(crate::launch::commands(&p, &s.topology, &s.recipe, wrapping)?.as_bytes())?;
    } else if s.json {
        serde_json::to_writer_pretty(&mut out, &p)?;
        writeln!(out)?;
    } else {
        plan::write_table(&mut out, &p)?;
    }
    Ok(())
}
