//! The console's static files, built into the binary with `include_str!`: `GET /console` and
//! `/console/` give the page, `/console/<file>` its stylesheet and scripts. Served without the
//! bearer token (they hold no data); see the module above.
//!
//! Each answer carries a Content Security Policy allowing only this origin's scripts, styles,
//! fetches and `data:` images, so the page cannot reach the network beyond this server (and a
//! violation shows in the browser's console, which the end-to-end test watches), and
//! `Cache-Control: no-cache` so a browser revalidates after the binary changes.

use axum::Router;
use axum::http::header;
use axum::routing::get;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'";

/// (path, content type, text) of each file.
const FILES: &[(&str, &str, &str)] = &[
    ("/console", HTML, include_str!("index.html")),
    ("/console/", HTML, include_str!("index.html")),
    (
        "/console/style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    ("/console/base.js", JS, include_str!("base.js")),
    ("/console/chart.js", JS, include_str!("chart.js")),
    ("/console/topology.js", JS, include_str!("topology.js")),
    ("/console/pages.js", JS, include_str!("pages.js")),
    ("/console/topics.js", JS, include_str!("topics.js")),
    ("/console/jobs.js", JS, include_str!("jobs.js")),
];
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The routes of the static files, to merge outside the auth layer.
pub fn assets() -> Router {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, text)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            (header::CONTENT_SECURITY_POLICY, CSP),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        text,
                    )
                }),
            )
        })
}
