//! The plan as an SVG picture: NVLink domains (racks) → nodes → GPUs, coloured by role,
//! each instance outlined and labelled — the picture for a design review.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use cohort_rank::topology::Topology;

use super::{Plan, Role};

const GPU_W: f64 = 30.0;
const GPU_H: f64 = 20.0;
const GAP: f64 = 4.0;
const LABEL_W: f64 = 92.0;
const PAD: f64 = 10.0;
const TITLE_H: f64 = 44.0;
const DOMAINS_PER_ROW: usize = 4;

fn colour(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Prefill) => "#4e79a7",
        Some(Role::Decode) => "#f28e2b",
        Some(Role::Aggregated) => "#59a14f",
        None => "#e6e6e6",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(id: &str) -> String {
    match id.split_once('-') {
        Some((role, n)) => format!("{}{n}", &role[..1]),
        None => id.to_owned(),
    }
}

/// Draws `plan` over `topo` (which also shows idle GPUs and excluded nodes).
pub fn render(plan: &Plan, topo: &Topology) -> String {
    let excluded: BTreeSet<&str> = plan.excluded.iter().map(String::as_str).collect();
    // (host, gpu) → instance position.
    let mut owner: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    for (i, inst) in plan.instances.iter().enumerate() {
        for s in &inst.shards {
            for &g in &s.gpus {
                owner.insert((s.node.as_str(), g), i);
            }
        }
    }
    // Domains as lists of (node index, GPUs of that node in the domain).
    let mut labels = Vec::new();
    let domains: Vec<Vec<(usize, Vec<u32>)>> = topo
        .domains()
        .into_iter()
        .map(|(domain, members)| {
            let mut rows: Vec<(usize, Vec<u32>)> = Vec::new();
            for (n, g) in members {
                match rows.last_mut() {
                    Some((m, gs)) if *m == n => gs.push(g),
                    _ => rows.push((n, vec![g])),
                }
            }
            labels.push(super::place::label(
                topo,
                &domain,
                rows.iter().map(|r| r.0),
                &excluded,
            ));
            rows
        })
        .collect();
    let max_gpus = domains
        .iter()
        .flatten()
        .map(|(_, g)| g.len())
        .max()
        .unwrap_or(1);
    let box_w = PAD * 2.0 + LABEL_W + max_gpus as f64 * (GPU_W + GAP);
    let box_h = |rows: usize| TITLE_H + PAD + rows as f64 * (GPU_H + GAP) + PAD;
    let cols = domains.len().clamp(1, DOMAINS_PER_ROW);
    let header_h = 78.0;
    let mut row_heights = Vec::new();
    for chunk in domains.chunks(cols) {
        row_heights.push(chunk.iter().map(|d| box_h(d.len())).fold(0.0, f64::max));
    }
    // Wide enough for the two header lines, however few domains there are.
    let width = (PAD + cols as f64 * (box_w + PAD)).max(820.0);
    let height = header_h + row_heights.iter().map(|h| h + PAD).sum::<f64>() + PAD;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let s = &plan.summary;
    let _ = writeln!(
        svg,
        r##"<text x="{PAD}" y="22" font-size="16" font-weight="bold" fill="#222">cohort plan: {} instances on {} GPUs in {} NVLink domains</text>"##,
        plan.instances.len(),
        s.gpus,
        plan.domains.len()
    );
    let _ = writeln!(
        svg,
        r##"<text x="{PAD}" y="42" font-size="12" fill="#444">prefill {} GPUs · decode {} · aggregated {} · idle {} · prefill with same-domain decode: {:.0}% · frontend {}:{}</text>"##,
        s.prefill_gpus,
        s.decode_gpus,
        s.aggregated_gpus,
        s.idle_gpus,
        s.prefill_local_share * 100.0,
        esc(&plan.frontend.node),
        plan.frontend.port
    );
    let mut lx = PAD;
    for (name, role) in [
        ("prefill", Some(Role::Prefill)),
        ("decode", Some(Role::Decode)),
        ("aggregated", Some(Role::Aggregated)),
        ("idle", None),
    ] {
        let _ = writeln!(
            svg,
            r##"<rect x="{lx}" y="54" width="14" height="12" fill="{}" stroke="#999"/><text x="{}" y="65" font-size="12" fill="#222">{name}</text>"##,
            colour(role),
            lx + 18.0
        );
        lx += 100.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{lx}" y="54" width="14" height="12" fill="none" stroke="#111" stroke-width="2"/><text x="{}" y="65" font-size="12" fill="#222">instance</text>"##,
        lx + 18.0
    );

    let mut y0 = header_h;
    for (ri, chunk) in domains.chunks(cols).enumerate() {
        for (ci, rows) in chunk.iter().enumerate() {
            let di = ri * cols + ci;
            let x = PAD + ci as f64 * (box_w + PAD);
            let h = box_h(rows.len());
            let label = labels[di].clone();
            let summary = plan.domains.iter().find(|d| d.label == label);
            let _ = writeln!(
                svg,
                r##"<rect x="{x}" y="{y0}" width="{box_w}" height="{h}" rx="6" fill="#fafafa" stroke="#888"/>"##
            );
            let sub = summary.map_or("all nodes excluded".to_owned(), |d| {
                if d.aggregated > 0 {
                    format!("{} aggregated · {} idle", d.aggregated, d.idle_gpus)
                } else {
                    format!(
                        "{} prefill : {} decode · {} idle",
                        d.prefill, d.decode, d.idle_gpus
                    )
                }
            });
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" font-size="12" font-weight="bold" fill="#222">{}</text><text x="{}" y="{}" font-size="10" fill="#555">domain {} · {sub}</text>"##,
                x + PAD,
                y0 + 15.0,
                esc(&label),
                x + PAD,
                y0 + 28.0,
                di + 1
            );
            // Column heads from the domain's first node: GPU index and its NUMA node.
            if let Some((n, gpus)) = rows.first() {
                for (k, g) in gpus.iter().enumerate() {
                    let cx = x + PAD + LABEL_W + k as f64 * (GPU_W + GAP) + GPU_W / 2.0;
                    let numa = topo.nodes[*n].gpus[*g as usize]
                        .numa_node
                        .map_or("numa ?".to_owned(), |m| format!("numa {m}"));
                    let _ = writeln!(
                        svg,
                        r##"<text x="{cx}" y="{}" font-size="8" fill="#666" text-anchor="middle">GPU {g}</text><text x="{cx}" y="{}" font-size="7" fill="#999" text-anchor="middle">{numa}</text>"##,
                        y0 + TITLE_H - 4.0,
                        y0 + TITLE_H + 5.0
                    );
                }
            }
            // GPU cells, remembering each instance's cell rectangles for its outline.
            let mut cells: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
            for (r, (n, gpus)) in rows.iter().enumerate() {
                let host = topo.nodes[*n].hostname.as_str();
                let gy = y0 + TITLE_H + PAD + r as f64 * (GPU_H + GAP);
                let ex = excluded.contains(host);
                let _ = writeln!(
                    svg,
                    r##"<text x="{}" y="{}" font-size="10" fill="{}">{}{}</text>"##,
                    x + PAD,
                    gy + 14.0,
                    if ex { "#b00" } else { "#333" },
                    esc(host),
                    if ex { " ✗" } else { "" }
                );
                for (k, g) in gpus.iter().enumerate() {
                    let gx = x + PAD + LABEL_W + k as f64 * (GPU_W + GAP);
                    let inst = owner.get(&(host, *g)).copied();
                    let fill = if ex {
                        "#f4d6d6"
                    } else {
                        colour(inst.map(|i| plan.instances[i].role))
                    };
                    let _ = writeln!(
                        svg,
                        r##"<rect x="{gx}" y="{gy}" width="{GPU_W}" height="{GPU_H}" rx="2" fill="{fill}"><title>{} GPU {g}{}</title></rect>"##,
                        esc(host),
                        inst.map_or(String::new(), |i| format!(": {}", plan.instances[i].id))
                    );
                    if let Some(i) = inst {
                        cells.entry(i).or_default().push((gx, gy));
                    }
                }
            }
            for (i, pts) in cells {
                let (mut x1, mut y1, mut x2, mut y2) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
                for (gx, gy) in &pts {
                    x1 = x1.min(*gx);
                    y1 = y1.min(*gy);
                    x2 = x2.max(gx + GPU_W);
                    y2 = y2.max(gy + GPU_H);
                }
                let _ = writeln!(
                    svg,
                    r##"<rect x="{}" y="{}" width="{}" height="{}" rx="3" fill="none" stroke="#111" stroke-width="1.6"/><text x="{}" y="{}" font-size="9" fill="#fff" font-weight="bold">{}</text>"##,
                    x1 - 1.5,
                    y1 - 1.5,
                    x2 - x1 + 3.0,
                    y2 - y1 + 3.0,
                    x1 + 3.0,
                    y1 + 13.0,
                    esc(&short(&plan.instances[i].id))
                );
            }
        }
        y0 += row_heights[ri] + PAD;
    }
    svg.push_str("</svg>\n");
    svg
}
