//! The page, embedded in the binary: plain HTML, CSS and JavaScript modules (no build step, no
//! CDN; nothing is fetched from anywhere but this server). Served from this table by name, so a
//! URL never reaches the filesystem.

pub struct Asset {
    pub name: &'static str,
    pub mime: &'static str,
    pub body: &'static str,
}

pub const INDEX: &str = include_str!("assets/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "boot.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/boot.js"),
    },
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "dag.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/dag.js"),
    },
    Asset {
        name: "panel.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/panel.js"),
    },
    Asset {
        name: "sweep.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/sweep.js"),
    },
    Asset {
        name: "chart.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/chart.js"),
    },
    Asset {
        name: "util.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/util.js"),
    },
    Asset {
        name: "style.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("assets/style.css"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        body: include_str!("assets/favicon.svg"),
    },
];

pub fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}
