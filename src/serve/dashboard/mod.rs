//! The web dashboard's files, built into the binary: no CDN, no external
//! fetch, no build step. `eco serve` mounts each [`Asset`] at its path, one
//! route per entry of [`ASSETS`] (an explicit table: nothing is looked up by
//! a name taken from the request).

/// One file of the dashboard.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file the page loads. `index.html` refers to the others relatively,
/// so the page also works behind a reverse proxy's path prefix.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("style.css"),
    },
];

/// Headers every asset is sent with: the page runs only its own script and
/// talks only to its own origin, and no other site may frame it.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let index = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            let relative = asset.path.trim_start_matches('/');
            assert!(index.contains(relative), "index.html never loads {relative}");
        }
        // The SVG namespace is a name, not a fetch.
        let svg = "http://www.w3.org/2000/svg";
        for body in ASSETS.iter().map(|a| a.body.replace(svg, "")) {
            assert!(!body.contains("http://"), "an external URL in an asset");
            assert!(!body.contains("https://"), "an external URL in an asset");
        }
    }

    #[test]
    fn the_script_never_writes_html() {
        let script = ASSETS[1].body;
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"] {
            assert!(!script.contains(sink), "app.js uses {sink}: use textContent");
        }
    }
}
