//! Shared helpers of the facade's integration tests: everything of `any2any-test-util`, plus
//! loaders through the facade's `Pipeline`.
#![allow(dead_code, unused_imports)]

pub use any2any_test_util::*;
use std::path::PathBuf;

pub fn janus_dir() -> PathBuf {
    fixture_dir("janus-tiny")
}

pub fn load_janus() -> any2any::Pipeline {
    any2any::Pipeline::load(
        janus_dir().to_str().unwrap(),
        any2any::LoadOptions::default(),
    )
    .expect("load tiny janus")
}

pub fn chameleon_dir() -> PathBuf {
    fixture_dir("chameleon-tiny")
}

pub fn load_chameleon() -> any2any::Pipeline {
    any2any::Pipeline::load(
        chameleon_dir().to_str().unwrap(),
        any2any::LoadOptions::default(),
    )
    .expect("load tiny chameleon")
}
