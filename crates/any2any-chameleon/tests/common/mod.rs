//! Shared helpers of the Chameleon / Lumina-mGPT tests: everything of `any2any-test-util`, the
//! crate's two families as the facade registers them, and loaders over them.
#![allow(dead_code, unused_imports)]

use any2any_core::{Family, Result};
pub use any2any_test_util::*;
use std::path::{Path, PathBuf};

/// `chameleon` (HF layout and Meta's original release) and `lumina`, as in the facade's list.
pub static FAMILIES: &[Family] = &[
    Family {
        name: "chameleon",
        matches: any2any_chameleon::matches,
        load: any2any_chameleon::load,
        resolve_dir: Some(any2any_chameleon::original::resolve_dir),
        hub_files: any2any_chameleon::original::HUB_FILES,
        components: any2any_chameleon::COMPONENTS,
    },
    Family {
        name: "lumina",
        matches: any2any_chameleon::lumina::matches,
        load: any2any_chameleon::lumina::load,
        resolve_dir: None,
        hub_files: &[],
        components: any2any_chameleon::COMPONENTS,
    },
];

/// Loads a local checkpoint directory with this crate's families.
pub fn load_dir(dir: &Path) -> Result<Loaded> {
    Loaded::load(dir, FAMILIES)
}

pub fn chameleon_dir() -> PathBuf {
    fixture_dir("chameleon-tiny")
}

pub fn load_chameleon() -> Loaded {
    load_dir(&chameleon_dir()).expect("load tiny chameleon")
}
