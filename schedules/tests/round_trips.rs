//! Every generator's schedule survives the text forms: each action through its PyTorch action
//! string, the whole schedule through JSON and through the compute-only CSV.

use pipesched_schedules::{from_csv, to_csv, Action, Kind, Schedule};

fn all_schedules() -> Vec<Schedule> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for p in 1..=6 {
            for m in [p, 2 * p, 2 * p + 1, 3 * p] {
                if let Ok(s) = kind.generate(p, kind.default_chunks(), m) {
                    out.push(s);
                }
            }
        }
    }
    out
}

#[test]
fn action_strings_round_trip() {
    for s in all_schedules() {
        for a in s.actions() {
            let text = a.to_string();
            assert_eq!(text.parse::<Action>().unwrap(), *a, "{text}");
        }
    }
}

#[test]
fn json_round_trips() {
    for s in all_schedules() {
        let text = serde_json::to_string(&s).unwrap();
        let back: Schedule = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}

#[test]
fn csv_round_trips() {
    for s in all_schedules() {
        let back = from_csv(&to_csv(&s).unwrap(), &s.name).unwrap();
        assert_eq!(back, s, "{} p={} m={}", s.name, s.p, s.m);
    }
}
