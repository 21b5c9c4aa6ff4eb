//! The controller's layers point one way (docs/architecture.md): a module
//! never imports from a layer above its own, and no two files import each
//! other, directly or in a circle.
//!
//! To see what the checker finds in another tree (e.g. an older layout):
//! `SHOAL_LAYERS_OLD_SRC=/path/to/controller/src cargo test -p
//! shoal-controller --test layers -- --ignored --nocapture`.

mod layercheck;

use std::path::Path;

use layercheck::{check, report_env, Layer};

/// The layers, lowest first (paths relative to `controller/src/`).
const LAYERS: &[Layer<'static>] = &[
    ("monitor", &["monitor/"]),
    ("knowledge", &["knowledge/"]),
    ("analyze", &["analyze/"]),
    ("plan", &["plan/"]),
    ("sim", &["sim/"]),
    ("config", &["config.rs"]),
    ("cluster", &["cluster/"]),
    ("execute", &["execute/"]),
    ("loop", &["mapek/"]),
    ("api", &["api/"]),
    ("wiring", &["app.rs", "lib.rs", "main.rs"]),
];

/// The same layers in the layout before issue 10 (Monitor files at the top
/// of `src/`, the loop in `runtime.rs` and `live.rs`).
const OLD_LAYERS: &[Layer<'static>] = &[
    (
        "monitor",
        &[
            "openflow.rs",
            "forwarding.rs",
            "topology.rs",
            "monitor.rs",
            "packet.rs",
            "cookie.rs",
            "hosts.rs",
            "macser.rs",
        ],
    ),
    ("knowledge", &["knowledge/"]),
    ("analyze", &["analyze/"]),
    ("plan", &["plan/"]),
    ("sim", &["sim/"]),
    ("config", &["config.rs"]),
    ("execute", &["execute/"]),
    ("loop", &["runtime.rs", "live.rs"]),
    ("api", &["api/"]),
    ("wiring", &["lib.rs", "main.rs"]),
];

#[test]
fn controller_layers_point_down_and_have_no_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let r = check(&src, LAYERS);
    assert!(r.edges.len() > 50, "the checker found too few imports");
    assert!(r.is_clean(), "layering violations:\n{}", r.render());
}

#[test]
#[ignore = "needs SHOAL_LAYERS_OLD_SRC (a controller/src of the old layout)"]
fn old_layout_is_rejected() {
    let r = report_env("SHOAL_LAYERS_OLD_SRC", OLD_LAYERS).expect("set SHOAL_LAYERS_OLD_SRC");
    assert!(!r.is_clean());
}
