//! `cohort topo`: this node's hardware as cohort sees it (or an emulated topology).

use std::io::{self, Write};
use std::path::PathBuf;

use cohort_rank::topology::discover::{self, Discovery, GpuEnv};
use cohort_rank::topology::{NicKind, Node, Topology};

/// Arguments of `cohort topo`.
#[derive(Debug, clap::Args)]
pub(crate) struct TopoArgs {
    /// Print JSON (the topology, the GPU binding applied and notes)
    #[arg(long)]
    json: bool,
    /// Show an emulated topology or a capture instead of discovering this node
    #[arg(long)]
    topology: Option<PathBuf>,
}

/// Discovery options for this process: the real root, the real environment.
pub(crate) fn discover_options() -> discover::Options {
    discover::Options {
        root: "/".into(),
        env: GpuEnv::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        ),
        nvml: true,
    }
}

pub(crate) fn run(args: &TopoArgs) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if let Some(path) = &args.topology {
        let topo = super::plan::load_topology(path)?;
        if args.json {
            serde_json::to_writer_pretty(&mut out, &topo)?;
            writeln!(out)?;
        } else {
            write_topology(&mut out, &topo)?;
        }
        return Ok(());
    }
    let d = discover::discover(&discover_options());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        write_discovery(&mut out, &d)?;
    }
    Ok(())
}

fn gib(mib: u64) -> String {
    format!("{:.1} GiB", mib as f64 / 1024.0)
}

fn write_node(out: &mut impl Write, n: &Node) -> io::Result<()> {
    writeln!(out, "node       {}", n.hostname)?;
    if !n.addresses.is_empty() {
        writeln!(out, "addresses  {}", n.addresses.join(" "))?;
    }
    for m in &n.numa_nodes {
        let gpus: Vec<String> = n
            .gpus
            .iter()
            .filter(|g| g.numa_node == Some(m.id))
            .map(|g| g.index.to_string())
            .collect();
        let smt = if m.smt_siblings.is_empty() {
            ""
        } else {
            ", SMT"
        };
        writeln!(
            out,
            "NUMA {:<5} CPUs {} ({} CPUs{smt}), {}{}",
            m.id,
            m.cpus,
            m.cpus.len(),
            gib(m.memory_mib),
            if gpus.is_empty() {
                String::new()
            } else {
                format!(", GPUs {}", gpus.join(","))
            }
        )?;
    }
    if let Some(u) = &n.usable_cpus {
        writeln!(
            out,
            "usable     CPUs {u} ({} CPUs: this process's affinity)",
            u.len()
        )?;
    }
    for g in &n.gpus {
        writeln!(
            out,
            "GPU {:<6} {}  {}  {}  NUMA {}  NVLink domain {}  {}",
            g.index,
            g.name,
            gib(g.memory_mib),
            g.pci_bus_id,
            g.numa_node.map_or("-".to_owned(), |n| n.to_string()),
            g.nvlink_domain,
            g.uuid
        )?;
    }
    for nic in &n.nics {
        writeln!(
            out,
            "NIC {:<6} {}  NUMA {}  {}{}",
            nic.name,
            match nic.kind {
                NicKind::Infiniband => "infiniband",
                NicKind::Ethernet => "ethernet",
            },
            nic.numa_node.map_or("-".to_owned(), |n| n.to_string()),
            nic.speed_mbps
                .map_or("speed unknown".to_owned(), |s| format!("{} Gb/s", s / 1000)),
            if nic.addresses.is_empty() {
                String::new()
            } else {
                format!("  {}", nic.addresses.join(" "))
            }
        )?;
    }
    Ok(())
}

fn write_discovery(out: &mut impl Write, d: &Discovery) -> io::Result<()> {
    for n in &d.topology.nodes {
        write_node(out, n)?;
        if n.gpus.is_empty() {
            writeln!(out, "GPUs       none")?;
        }
    }
    let b = &d.gpu_binding;
    let unset = "(unset)".to_owned();
    writeln!(
        out,
        "binding    {}={}  Slurm GPUs={}  -> NVML GPUs {:?} of {}",
        discover::vars::CUDA_VISIBLE_DEVICES,
        b.env.cuda_visible_devices.as_ref().unwrap_or(&unset),
        b.env.slurm_gpus.as_ref().unwrap_or(&unset),
        b.visible_nvml_indices,
        b.gpus_on_node
    )?;
    for note in &d.notes {
        writeln!(out, "note       {note}")?;
    }
    Ok(())
}

fn write_topology(out: &mut impl Write, t: &Topology) -> io::Result<()> {
    writeln!(
        out,
        "{}: {} nodes, {} GPUs, {} NVLink domains",
        t.source,
        t.nodes.len(),
        t.gpu_count(),
        t.domains().len()
    )?;
    for n in &t.nodes {
        writeln!(out)?;
        write_node(out, n)?;
    }
    Ok(())
}
