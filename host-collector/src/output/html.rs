//! `report.html`: one self-contained file (no network): the Markdown report
//! rendered with pulldown-cmark, styled, with the SVG plots inlined.

use pulldown_cmark::{Options, Parser, html};

/// A plot to place in the report, after the section whose heading starts with
/// `after_heading`.
pub struct Figure {
    /// Heading text prefix of the section the figure belongs to.
    pub after_heading: String,
    /// SVG document.
    pub svg: String,
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1d2327; line-height: 1.45; }
h1 { border-bottom: 3px solid #4e79a7; padding-bottom: .3em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #dcdcde; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #dcdcde; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
tr:nth-child(even) td { background: #fafbfc; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
code { background: #f3f4f6; padding: .05em .3em; border-radius: 3px; font-size: 0.92em; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: .7em 1em; overflow-x: auto; font-size: 0.85em; line-height: 1.3; }
pre code { background: none; padding: 0; }
figure { margin: 1.2em 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
.verdict-confirmed { color: #1a7f37; font-weight: 600; }
.verdict-contradicted { color: #cf222e; font-weight: 600; }
.verdict-not-tested { color: #6e7781; font-weight: 600; }
";

/// Renders the report page.
pub fn render(markdown: &str, figures: &[Figure]) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    // Insert each figure's placeholder before the next section heading.
    let mut md = String::with_capacity(markdown.len());
    let mut pending: Vec<usize> = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("## ") {
            for i in pending.drain(..) {
                md.push_str(&format!("\n<div data-figure=\"{i}\"></div>\n\n"));
            }
            let heading = line.trim_start_matches("## ");
            pending.extend(
                figures
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| heading.starts_with(&f.after_heading))
                    .map(|(i, _)| i),
            );
        }
        md.push_str(line);
        md.push('\n');
    }
    for i in pending {
        md.push_str(&format!("\n<div data-figure=\"{i}\"></div>\n"));
    }
    let mut body = String::new();
    html::push_html(&mut body, Parser::new_ext(&md, opts));
    for (i, f) in figures.iter().enumerate() {
        body = body.replace(
            &format!("<div data-figure=\"{i}\"></div>"),
            &format!("<figure>{}</figure>", f.svg),
        );
    }
    let body = body
        .replace(
            "<strong>confirmed</strong>",
            "<span class=\"verdict-confirmed\">confirmed</span>",
        )
        .replace(
            "<strong>contradicted</strong>",
            "<span class=\"verdict-contradicted\">contradicted</span>",
        )
        .replace(
            "<strong>not tested</strong>",
            "<span class=\"verdict-not-tested\">not tested</span>",
        );
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>guestscope report</title>\
         <style>{STYLE}</style></head><body>\n{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_land_at_the_end_of_their_section_and_nothing_is_fetched() {
        let md = "# R\n\n## Boot time\n\ntext\n\n## Other\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";
        let page = render(
            md,
            &[Figure {
                after_heading: "Boot".into(),
                svg: "<svg id=\"x\"></svg>".into(),
            }],
        );
        let fig = page.find("<figure><svg id=\"x\">").unwrap();
        assert!(page.find("<p>text</p>").unwrap() < fig);
        assert!(fig < page.find("<h2>Other</h2>").unwrap());
        assert!(page.contains("<table>"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
