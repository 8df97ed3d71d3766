//! The load tools that drive the `mediator` binary from outside:
//! `mediator-bench` (one load along many paths, beside a direct call, nginx
//! and NATS) and `soak` (a long, moderate, mixed load watched for leaks).
//!
//! Neither is part of the product: they live in a package of their own so
//! that building the `mediator` binary compiles no NATS client and no
//! histograms. Both find the `mediator` binary beside themselves (cargo puts
//! every binary of the workspace in one folder) or take `--mediator PATH`.

use std::time::Duration;

/// Parses a duration as the load tools take it: `500ms`, `10s`, `2m`, or a
/// bare number of seconds; zero and other units are refused.
///
/// ```
/// use std::time::Duration;
/// use mediator_load::parse_duration;
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("3h").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s or m")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err("a duration must be above zero".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}
