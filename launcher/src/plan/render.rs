//! The plan as a table and a summary, for people.

use std::io::{self, Write};

use cohort_rank::topology::CpuSet;

use super::{Plan, Role};

fn list(v: &[u32]) -> String {
    CpuSet::from_cpus(v.iter().copied()).to_string()
}

fn ratio(p: usize, d: usize) -> String {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    match gcd(p, d) {
        0 => "-".to_owned(),
        g => format!("{}:{}", p / g, d / g),
    }
}

/// `decode-0..decode-3` for consecutive ids of one role, else the list.
fn feeds(ids: &[String]) -> String {
    let nums: Option<Vec<(&str, usize)>> = ids
        .iter()
        .map(|id| {
            let (role, n) = id.rsplit_once('-')?;
            Some((role, n.parse().ok()?))
        })
        .collect();
    if let Some(nums) = nums {
        let consecutive = nums
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[1].1 == w[0].1 + 1);
        if consecutive && nums.len() > 2 {
            return format!("{}..{}", ids[0], ids[ids.len() - 1]);
        }
    }
    ids.join(",")
}

/// Writes the instance table, then the summary.
pub fn write_table(out: &mut impl Write, plan: &Plan) -> io::Result<()> {
    let mut rows: Vec<[String; 9]> = vec![[
        "INSTANCE", "ROLE", "DOMAIN", "NODE", "GPUS", "MEM", "CPUS", "PORT", "FEEDS",
    ]
    .map(str::to_owned)];
    for inst in &plan.instances {
        for (k, s) in inst.shards.iter().enumerate() {
            let first = k == 0;
            rows.push([
                if first {
                    inst.id.clone()
                } else {
                    String::new()
                },
                if first {
                    inst.role.name().to_owned()
                } else {
                    String::new()
                },
                if first {
                    inst.domain.clone()
                } else {
                    String::new()
                },
                s.node.clone(),
                list(&s.gpus),
                list(&s.mem_nodes),
                s.cpus.to_string(),
                if first {
                    inst.port.to_string()
                } else {
                    String::new()
                },
                if first {
                    feeds(&inst.feeds)
                } else {
                    String::new()
                },
            ]);
        }
    }
    write_rows(out, &rows)?;
    writeln!(out)?;
    let s = &plan.summary;
    writeln!(
        out,
        "frontend   {}:{} on CPUs {}",
        plan.frontend.node, plan.frontend.port, plan.frontend.cpus
    )?;
    if let Some(r) = plan.reserved.first() {
        writeln!(
            out,
            "cohort     CPUs {} on each node with instances (here on `{}`)",
            r.cpus, r.node
        )?;
    }
    let mut used = Vec::new();
    for (role, n) in [
        (Role::Prefill, s.prefill_gpus),
        (Role::Decode, s.decode_gpus),
        (Role::Aggregated, s.aggregated_gpus),
    ] {
        if n > 0 {
            used.push(format!("{} {n}", role.name()));
        }
    }
    writeln!(
        out,
        "GPUs       {} in {} NVLink domains: {}, idle {}",
        s.gpus,
        plan.domains.len(),
        used.join(", "),
        s.idle_gpus
    )?;
    if !plan.excluded.is_empty() {
        writeln!(
            out,
            "excluded   {}",
            cohort_slurm::hostlist::compress(&plan.excluded)
        )?;
    }
    writeln!(out)?;
    let disagg = plan.instances.iter().any(|i| i.role != Role::Aggregated);
    let mut rows: Vec<Vec<String>> = vec![if disagg {
        vec!["DOMAIN", "GPUS", "PREFILL", "DECODE", "P:D", "IDLE"]
    } else {
        vec!["DOMAIN", "GPUS", "AGGREGATED", "IDLE"]
    }
    .into_iter()
    .map(str::to_owned)
    .collect()];
    // Long lists of identical domains (512 HGX nodes) would drown the table: runs of
    // identical rows are folded.
    let mut last: Option<(Vec<String>, usize)> = None;
    let mut folded: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for d in &plan.domains {
        let cols = if disagg {
            vec![
                d.gpus.to_string(),
                d.prefill.to_string(),
                d.decode.to_string(),
                ratio(d.prefill, d.decode),
                d.idle_gpus.to_string(),
            ]
        } else {
            vec![
                d.gpus.to_string(),
                d.aggregated.to_string(),
                d.idle_gpus.to_string(),
            ]
        };
        match (&mut last, folded.last_mut()) {
            (Some((c, n)), Some((labels, _))) if *c == cols => {
                *n += 1;
                labels.push(d.label.clone());
            }
            _ => {
                folded.push((vec![d.label.clone()], cols.clone()));
                last = Some((cols, 1));
            }
        }
    }
    for (labels, cols) in folded {
        if labels.len() > 3 {
            let mut row = vec![format!("{} (+{} like it)", labels[0], labels.len() - 1)];
            row.extend(cols);
            rows.push(row);
        } else {
            for l in labels {
                let mut row = vec![l];
                row.extend(cols.iter().cloned());
                rows.push(row);
            }
        }
    }
    write_rows(out, &rows)?;
    writeln!(out)?;
    if disagg {
        writeln!(
            out,
            "prefill GPUs whose decode partners share their NVLink domain: {:.0}%",
            s.prefill_local_share * 100.0
        )?;
        if plan.cross_domain.is_empty() {
            writeln!(out, "cross-domain KV transfers: none")?;
        } else {
            writeln!(out, "cross-domain KV transfers:")?;
            for c in &plan.cross_domain {
                writeln!(out, "  - {c}")?;
            }
        }
    }
    Ok(())
}

fn write_rows<R: AsRef<[String]>>(out: &mut impl Write, rows: &[R]) -> io::Result<()> {
    let cols = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.as_ref().get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let r = r.as_ref();
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
