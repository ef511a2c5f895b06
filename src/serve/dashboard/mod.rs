//! The web dashboard's files, built into the binary: no CDN, no external
//! fetch, no build step. `eco serve`'s route table mounts [`index`],
//! [`script`] and [`style`], one route each (nothing is looked up by a name
//! taken from the request).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// One file of the dashboard.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The page. It refers to the others relatively, so it also works behind a
/// reverse proxy's path prefix.
pub const INDEX: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_str!("index.html"),
};

pub const SCRIPT: Asset = Asset {
    path: "/app.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("app.js"),
};

pub const STYLE: Asset = Asset {
    path: "/style.css",
    content_type: "text/css; charset=utf-8",
    body: include_str!("style.css"),
};

/// Every file the page loads.
pub const ASSETS: [Asset; 3] = [INDEX, SCRIPT, STYLE];

/// The page runs only its own script, talks only to its own origin and
/// cannot be framed: an injected string could neither run nor leak.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub async fn index() -> Response {
    serve(&INDEX)
}

/// `GET /app.js`.
pub async fn script() -> Response {
    serve(&SCRIPT)
}

/// `GET /style.css`.
pub async fn style() -> Response {
    serve(&STYLE)
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let index = INDEX.body;
        for asset in [SCRIPT, STYLE] {
            let relative = asset.path.trim_start_matches('/');
            assert!(
                index.contains(relative),
                "index.html never loads {relative}"
            );
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
        let script = SCRIPT.body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(
                !script.contains(sink),
                "app.js uses {sink}: use textContent"
            );
        }
    }
}
