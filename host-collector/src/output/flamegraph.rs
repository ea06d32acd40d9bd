//! Flame graphs for `report.html`: kernel stacks merged into one SVG, the outermost
//! caller at the bottom and the probed function on top, each box as wide as the
//! events that passed through it (Brendan Gregg's layout, as `flamegraph.pl` and
//! inferno draw it). Plain SVG with a tooltip per box, so the report stays one
//! self-contained file; the same stacks are in `stacks.folded` for those tools.
//! Written by hand rather than with inferno: inferno is CDDL-licensed (this project
//! is MIT or Apache-2.0) and pulls in a command-line stack for one SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Width of the graph, px.
const WIDTH: f64 = 1000.0;
/// Height of one frame, px.
const ROW: f64 = 16.0;
/// Room for the title above the frames, px.
const TOP: f64 = 28.0;
/// Boxes narrower than this are left out (their events stay in their parents).
const MIN_BOX: f64 = 0.3;
/// Font size of the labels, px; a label fits where a box is this wide per character.
const FONT: f64 = 11.0;
const CHAR_WIDTH: f64 = 6.2;

/// One function in the merged call tree: the events whose stacks pass through it
/// along this path.
#[derive(Debug, Default)]
struct Node {
    count: u64,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn add(&mut self, path: &[String], count: u64) {
        self.count += count;
        if let Some((first, rest)) = path.split_first() {
            self.children
                .entry(first.clone())
                .or_default()
                .add(rest, count);
        }
    }

    fn depth(&self) -> usize {
        self.children
            .values()
            .map(|c| 1 + c.depth())
            .max()
            .unwrap_or(0)
    }
}

/// How the bottom row shares the width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Widths {
    /// Every box as wide as its events: the graph of all stacks together.
    ByEvents,
    /// Each bottom box (a workload) the same width, its callees by their events
    /// within it: one workload with 100 times the events of the others does not hide
    /// them. Tooltips give the events and the share of their bottom box.
    SameForEachRoot,
}

/// The flame graph of `stacks` (each a path of frame names from the outermost
/// caller to the probed function, with its event count), titled `title`; `None`
/// without events.
pub fn svg(title: &str, stacks: &[(Vec<String>, u64)], widths: Widths) -> Option<String> {
    let mut root = Node::default();
    for (path, count) in stacks {
        root.add(path, *count);
    }
    if root.count == 0 {
        return None;
    }
    let depth = root.depth();
    let height = TOP + ROW * depth as f64 + 8.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="{FONT}"><rect width="100%" height="100%" fill="#fdfdf7"/><text x="{x}" y="18" text-anchor="middle" font-size="14" font-family="sans-serif">{t}</text>"##,
        x = WIDTH / 2.0,
        t = escape(title),
    );
    let bottom = height - 8.0;
    let roots = root.children.values().filter(|c| c.count > 0).count();
    let mut x = 0.0;
    for (name, child) in root.children.iter().filter(|(_, c)| c.count > 0) {
        let (scale, total) = match widths {
            Widths::ByEvents => (WIDTH / root.count as f64, root.count),
            Widths::SameForEachRoot => (WIDTH / roots as f64 / child.count as f64, child.count),
        };
        draw(&mut out, name, child, x, bottom - ROW, scale, total);
        x += child.count as f64 * scale;
    }
    out.push_str("</svg>");
    Some(out)
}

/// Draws `node` (named `name`) with its left edge at `x` and its top at `y`, then its
/// callees above it.
fn draw(out: &mut String, name: &str, node: &Node, x: f64, y: f64, scale: f64, total: u64) {
    let width = node.count as f64 * scale;
    if width < MIN_BOX {
        return;
    }
    let share = 100.0 * node.count as f64 / total as f64;
    let _ = write!(
        out,
        r#"<g><title>{n} ({c} events, {share:.2}%)</title><rect x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{h}" fill="{fill}" rx="2"/>"#,
        n = escape(name),
        c = node.count,
        w = (width - 0.5).max(0.1),
        h = ROW - 1.0,
        fill = color(name),
    );
    let chars = ((width - 6.0) / CHAR_WIDTH).floor() as usize;
    if chars >= 3 {
        let label: String = if name.chars().count() <= chars {
            name.to_string()
        } else {
            name.chars().take(chars - 2).collect::<String>() + ".."
        };
        let _ = write!(
            out,
            r#"<text x="{tx:.2}" y="{ty:.1}">{l}</text>"#,
            tx = x + 3.0,
            ty = y + ROW - 4.5,
            l = escape(&label),
        );
    }
    out.push_str("</g>");
    let mut cx = x;
    for (child_name, child) in &node.children {
        draw(out, child_name, child, cx, y - ROW, scale, total);
        cx += child.count as f64 * scale;
    }
}

/// A warm color of its own for each function name (the classic palette: reds to
/// yellows), so one function keeps its color across the graph.
fn color(name: &str) -> String {
    // FNV-1a: stable across runs and platforms.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let r = 205 + (h % 50) as u8;
    let g = ((h >> 8) % 230) as u8;
    let b = ((h >> 16) % 55) as u8;
    format!("rgb({r},{g},{b})")
}

/// Text as SVG needs it.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    /// The boxes of the graph: (name, x, width) from each `<title>` and `<rect>`.
    fn boxes(svg: &str) -> Vec<(String, f64, f64)> {
        svg.split("<g><title>")
            .skip(1)
            .map(|g| {
                let name = g.split(" (").next().unwrap().to_string();
                let attr = |a: &str| -> f64 {
                    let at = g.find(&format!(" {a}=\"")).unwrap() + a.len() + 3;
                    g[at..].split('"').next().unwrap().parse().unwrap()
                };
                (name, attr("x"), attr("width") + 0.5)
            })
            .collect()
    }

    #[test]
    fn boxes_are_as_wide_as_the_events_through_them_and_callers_merge() {
        let stacks = [
            (
                path(&["fopen", "do_syscall_64", "alloc_fd", "_raw_spin_lock"]),
                300,
            ),
            (
                path(&["fopen", "do_syscall_64", "dput", "_raw_spin_lock"]),
                100,
            ),
            (path(&["malloc", "exc_page_fault"]), 600),
        ];
        let svg = svg("spin_lock", &stacks, Widths::ByEvents).unwrap();
        let b = boxes(&svg);
        let find = |n: &str| b.iter().filter(|x| x.0 == n).cloned().collect::<Vec<_>>();
        // fopen has 400 of 1000 events: 40% of the width, at the left (names sorted).
        assert_eq!(find("fopen"), [("fopen".to_string(), 0.0, 400.0)]);
        assert_eq!(find("malloc")[0].2, 600.0);
        assert_eq!(find("do_syscall_64").len(), 1, "one caller box, merged");
        let alloc = &find("alloc_fd")[0];
        assert_eq!(alloc.2, 300.0);
        // The lock is drawn once per path: over alloc_fd and over dput.
        assert_eq!(find("_raw_spin_lock").len(), 2);
        assert!(svg.contains("alloc_fd (300 events, 30.00%)"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn each_root_can_get_the_same_width() {
        let stacks = [
            (path(&["urandom", "try_to_generate_entropy"]), 9_900),
            (path(&["fopen", "alloc_fd"]), 75),
            (path(&["fopen", "dput"]), 25),
        ];
        let svg = svg("t", &stacks, Widths::SameForEachRoot).unwrap();
        let b = boxes(&svg);
        let width = |n: &str| b.iter().find(|x| x.0 == n).unwrap().2;
        assert_eq!((width("fopen"), width("urandom")), (500.0, 500.0));
        assert_eq!(width("alloc_fd"), 375.0);
        // Counts stay the events'; the share is of the workload's own.
        assert!(svg.contains("alloc_fd (75 events, 75.00%)"), "{svg}");
    }

    #[test]
    fn deeper_frames_sit_higher_and_tiny_boxes_are_left_out() {
        let mut stacks = vec![(path(&["a", "b", "c"]), 100_000)];
        stacks.push((path(&["a", "tiny"]), 1));
        let svg = svg("t", &stacks, Widths::ByEvents).unwrap();
        let y = |n: &str| -> f64 {
            let g = svg.split(&format!("<title>{n} (")).nth(1).unwrap();
            let at = g.find(" y=\"").unwrap() + 4;
            g[at..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(y("c") < y("b") && y("b") < y("a"), "callees above callers");
        assert!(!svg.contains("<title>tiny"), "0.01 px wide: left out");
        assert_eq!(svg.matches("<title>").count(), 3);
    }

    #[test]
    fn no_events_no_graph_and_names_are_escaped() {
        assert!(svg("t", &[], Widths::ByEvents).is_none());
        assert!(svg("t", &[(path(&["x"]), 0)], Widths::ByEvents).is_none());
        let svg = svg("a<b", &[(path(&["f<&>\""]), 5)], Widths::ByEvents).unwrap();
        assert!(svg.contains("a&lt;b") && svg.contains("f&lt;&amp;&gt;&quot;"));
        assert_eq!(color("alloc_fd"), color("alloc_fd"));
    }
}
