//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the check of every fuzz
//! target, so the inputs the fuzzers found interesting (and every crash fixed since) stay
//! covered by `cargo test` without cargo-fuzz or a nightly toolchain.

use std::path::{Path, PathBuf};

use infergate::fuzzing::TARGETS;

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the corpus of fuzz target `{target}` is missing ({}: {e}); commit a few seed inputs",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable corpus folder").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus of fuzz target `{target}` ({}) is empty; commit a few seed inputs",
        dir.display()
    );
    files
}

#[test]
fn every_fuzz_target_passes_its_committed_corpus() {
    for (target, check) in TARGETS {
        for path in corpus_files(target) {
            let data = std::fs::read(&path).expect("readable corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target `{target}` fails on {} (the panic above says why; \
                 under fuzz/, `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} <file>` runs it alone)",
                path.display()
            );
        }
    }
}

#[test]
fn every_check_has_a_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        let source = root.join(format!("{target}.rs"));
        assert!(
            source.is_file(),
            "no fuzz target source {} for `{target}`",
            source.display()
        );
    }
}
