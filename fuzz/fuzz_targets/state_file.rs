//! `state.json` as a restarted daemon reads it: parsed, its ids table
//! rebuilt, each saved project planned from nothing (what restoring it
//! starts).
#![no_main]

use eco::daemon::state;
use eco::plan::plan;
use eco::runtime::ids::IdTable;
use eco::state::Observed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(saved) = state::parse(data) else {
        return;
    };
    let mut ids = IdTable::from_saved(&saved.ids);
    for project in &saved.projects {
        let _ = plan(&project.spec, &Observed::new());
        for (name, app) in &project.spec.apps {
            for n in 0..app.instances.min(64) {
                let slot = eco::runtime::ids::Slot::new(&project.spec.name, name, n);
                ids.allocate(&slot);
            }
        }
    }
});
