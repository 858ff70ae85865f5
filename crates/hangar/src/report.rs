//! Check reports, shared by the commands that check a set-up and say what to fix (`hangar
//! doctor`, `hangar controller check-config --aws`). Each check passes, warns, fails with the
//! fix, or is skipped because something it needs failed earlier; every report renders its checks
//! the same way, so an operator reads them all alike. It sits below every command, as a piece
//! several of them use.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    /// The four-letter tag a terminal report shows.
    pub fn tag(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Checks in the order they ran.
#[derive(Clone, Debug, Default)]
pub struct Checks(Vec<Check>);

impl Checks {
    pub fn push(
        &mut self,
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Check {
            name,
            status,
            detail: detail.into(),
            fix,
        });
    }

    pub fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Pass, detail, None);
    }

    pub fn warn(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Status::Warn, detail, Some(fix.into()));
    }

    pub fn fail(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Status::Fail, detail, Some(fix.into()));
    }

    pub fn skip(&mut self, names: &[&'static str], because: &str) {
        for name in names {
            self.push(name, Status::Skip, format!("skipped: {because}"), None);
        }
    }

    /// A failure described by an error whose message ends in "Fix: …" (all of Hangar's do).
    pub fn fail_on(&mut self, name: &'static str, err: &dyn std::fmt::Display) {
        let (detail, fix) = split_fix(&err.to_string());
        self.push(name, Status::Fail, detail, fix);
    }

    pub fn as_slice(&self) -> &[Check] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Check> {
        self.0
    }
}

/// Splits "… . Fix: …" messages into the finding and the fix.
pub fn split_fix(message: &str) -> (String, Option<String>) {
    match message.split_once(" Fix: ") {
        Some((detail, fix)) => (detail.to_string(), Some(fix.to_string())),
        None => (message.to_string(), None),
    }
}

/// One line per check (and one more for its fix), names padded to `name_width`.
pub fn render_checks(checks: &[Check], name_width: usize) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(
            out,
            "  {}  {:<name_width$} {}",
            c.status.tag(),
            c.name,
            c.detail
        );
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "        {:<name_width$} fix: {fix}", "");
        }
    }
    out
}

/// How many of `checks` have `status`.
pub fn count<'a>(checks: impl IntoIterator<Item = &'a Check>, status: Status) -> usize {
    checks.into_iter().filter(|c| c.status == status).count()
}

/// The closing line: failures, warnings and skips out of all checks.
pub fn summary<'a>(checks: impl IntoIterator<Item = &'a Check> + Clone) -> String {
    format!(
        "Result: {} of {} checks failed ({} warnings, {} skipped)\n",
        count(checks.clone(), Status::Fail),
        checks.clone().into_iter().count(),
        count(checks.clone(), Status::Warn),
        count(checks, Status::Skip)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_at_the_fix() {
        let (d, f) = split_fix("GitHub refused x (403: no). Fix: add the scope");
        assert_eq!(d, "GitHub refused x (403: no).");
        assert_eq!(f.as_deref(), Some("add the scope"));
        assert_eq!(split_fix("plain").1, None);
    }

    #[test]
    fn renders_each_check_with_its_fix_and_a_summary() {
        let mut checks = Checks::default();
        checks.pass("a", "fine");
        checks.fail("b", "broken", "mend it");
        checks.skip(&["c"], "needs b");
        let text = render_checks(checks.as_slice(), 3);
        assert_eq!(
            text,
            "  PASS  a   fine\n  FAIL  b   broken\n            fix: mend it\n  SKIP  c   skipped: needs b\n"
        );
        assert_eq!(
            summary(checks.as_slice()),
            "Result: 1 of 3 checks failed (0 warnings, 1 skipped)\n"
        );
    }
}
