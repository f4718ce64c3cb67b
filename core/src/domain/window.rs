//! Maintenance windows: weekly UTC slots in which automatic upgrades may start.
//! Slots are validated (no overlap, 30..=1440 minutes, `HH:MM`) before they
//! are stored; an unparsable slot is ignored here.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use meshfleet_model::{MaintenanceWindow, Weekday};

const WEEK_MINUTES: i64 = 7 * 24 * 60;

/// `HH:MM` → minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn day_index(day: Weekday) -> i64 {
    match day {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

/// The slots as `(start, end)` minutes after Monday 00:00 UTC (end may pass
/// the end of the week).
fn slots(window: &MaintenanceWindow) -> Vec<(i64, i64)> {
    window
        .slots
        .iter()
        .filter_map(|s| {
            let start = day_index(s.day) * 1440 + i64::from(parse_hhmm(&s.start)?);
            Some((start, start + i64::from(s.duration_minutes)))
        })
        .collect()
}

/// Minutes since the start of `now`'s week (Monday 00:00 UTC), and that start.
fn week_position(now: DateTime<Utc>) -> (i64, DateTime<Utc>) {
    let minutes = i64::from(now.weekday().num_days_from_monday()) * 1440
        + i64::from(now.hour()) * 60
        + i64::from(now.minute());
    let midnight = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .unwrap_or(now);
    let week_start = midnight - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    (minutes, week_start)
}

/// Whether an automatic upgrade may start at `now`. No window: any time.
pub fn is_open(window: Option<&MaintenanceWindow>, now: DateTime<Utc>) -> bool {
    let Some(window) = window else {
        return true;
    };
    let (pos, _) = week_position(now);
    slots(window).into_iter().any(|(start, end)| {
        // a slot that runs past Sunday midnight also covers the next week's start
        (start <= pos && pos < end) || (start <= pos + WEEK_MINUTES && pos + WEEK_MINUTES < end)
    })
}

/// When the window opens next at or after `now` (`now` itself when it is
/// open); `None` when there is no window (always open) or no valid slot.
pub fn next_opening(
    window: Option<&MaintenanceWindow>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let window = window?;
    if is_open(Some(window), now) {
        return Some(now);
    }
    let (pos, week_start) = week_position(now);
    slots(window)
        .into_iter()
        .map(|(start, _)| {
            let offset = if start > pos {
                start
            } else {
                start + WEEK_MINUTES
            };
            week_start + Duration::minutes(offset)
        })
        .min()
}

/// When the slot open at `now` closes (`None` when closed or no window).
pub fn closes_at(window: Option<&MaintenanceWindow>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let window = window?;
    let (pos, week_start) = week_position(now);
    slots(window).into_iter().find_map(|(start, end)| {
        if start <= pos && pos < end {
            Some(week_start + Duration::minutes(end))
        } else if start <= pos + WEEK_MINUTES && pos + WEEK_MINUTES < end {
            Some(week_start + Duration::minutes(end - WEEK_MINUTES))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshfleet_model::MaintenanceSlot;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn saturday_night() -> MaintenanceWindow {
        MaintenanceWindow {
            slots: vec![MaintenanceSlot {
                day: Weekday::Saturday,
                start: "02:00".into(),
                duration_minutes: 240,
            }],
        }
    }

    #[test]
    fn a_tuesday_waits_for_the_saturday_slot() {
        // 2026-12-01 is a Tuesday
        let tuesday = at("2026-12-01T10:30:00Z");
        let w = saturday_night();
        assert!(!is_open(Some(&w), tuesday));
        assert_eq!(
            next_opening(Some(&w), tuesday),
            Some(at("2026-12-05T02:00:00Z"))
        );
        assert!(is_open(Some(&w), at("2026-12-05T02:00:00Z")));
        assert!(is_open(Some(&w), at("2026-12-05T05:59:00Z")));
        assert!(!is_open(Some(&w), at("2026-12-05T06:00:00Z")));
        assert_eq!(
            closes_at(Some(&w), at("2026-12-05T03:00:00Z")),
            Some(at("2026-12-05T06:00:00Z"))
        );
        // just after the slot: next week's
        assert_eq!(
            next_opening(Some(&w), at("2026-12-05T06:00:00Z")),
            Some(at("2026-12-12T02:00:00Z"))
        );
    }

    #[test]
    fn no_window_means_any_time() {
        assert!(is_open(None, at("2026-12-01T10:30:00Z")));
        assert_eq!(next_opening(None, at("2026-12-01T10:30:00Z")), None);
    }

    #[test]
    fn a_slot_across_sunday_midnight_covers_monday_morning() {
        let w = MaintenanceWindow {
            slots: vec![MaintenanceSlot {
                day: Weekday::Sunday,
                start: "23:00".into(),
                duration_minutes: 120,
            }],
        };
        // 2026-11-30 is a Monday
        assert!(is_open(Some(&w), at("2026-11-30T00:30:00Z")));
        assert!(!is_open(Some(&w), at("2026-11-30T01:00:00Z")));
        assert_eq!(
            closes_at(Some(&w), at("2026-11-30T00:30:00Z")),
            Some(at("2026-11-30T01:00:00Z"))
        );
        assert_eq!(
            next_opening(Some(&w), at("2026-11-30T01:00:00Z")),
            Some(at("2026-12-06T23:00:00Z"))
        );
    }
}
