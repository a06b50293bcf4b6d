//! The facade's family registry: `Pipeline::load` recognises each tiny fixture's family from its
//! config.json and hands it to that family's backend. (The families' own behaviour is tested in
//! their crates, `crates/any2any-*/tests/`.)
mod common;
use any2any::prelude::*;
use common::fixture_dir;

#[test]
fn pipeline_loads_each_fixture_with_its_family() {
    for (fixture, family) in [
        ("janus-tiny", "janus"),
        ("chameleon-tiny", "chameleon"),
        ("emu3-tiny", "emu3"),
        ("showo-tiny", "showo"),
    ] {
        let dir = fixture_dir(fixture);
        let pipe = Pipeline::load(dir.to_str().unwrap(), LoadOptions::default())
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(pipe.family(), family, "{fixture}");
        assert_eq!(pipe.backend().capabilities().family, family, "{fixture}");
        assert_eq!(pipe.info().family, family, "{fixture}");
    }
}
