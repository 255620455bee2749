//! Verified justification: a policy's `reasonPattern` and `reasonHint`.
//!
//! The pattern is a regular expression in the `regex` crate's syntax, which is RE2's (as CEL's
//! `matches`): matching takes time linear in the reason, so no pattern can stall admission.
//! It is searched anywhere in the reason unless anchored.

use regex::{Regex, RegexBuilder};

use crate::api::AccessPolicySpec;

/// The most memory a compiled pattern may take: ample for any ticket-number pattern, small
/// enough that a policy cannot make kubepam build a huge automaton.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

/// How much of a refused reason a refusal quotes: admission sees the reason before the schema
/// bounds its length.
const SHOWN: usize = 100;

/// Compile a `reasonPattern`, or say what is wrong with it.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            // The crate's message spans lines with a caret diagram; keep its last line.
            let text = e.to_string();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid");
            format!(
                "reasonPattern {pattern:?} is not a valid regular expression ({}); write one \
                 such as '^(INC|CHG)-[0-9]+'",
                last.trim().trim_start_matches("error: ")
            )
        })
}

/// Why a reason was refused under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The policy's own pattern does not compile.
    BadPattern(String),
    /// The reason does not match; the message says what is expected.
    Mismatch(String),
}

/// Check `reason` against the policy's `reasonPattern` (nothing to check without one).
pub fn check(policy_name: &str, spec: &AccessPolicySpec, reason: &str) -> Result<(), Refusal> {
    let Some(pattern) = spec.reason_pattern.as_deref() else {
        return Ok(());
    };
    let regex = compile(pattern)
        .map_err(|e| Refusal::BadPattern(format!("AccessPolicy {policy_name}: {e}")))?;
    if regex.is_match(reason) {
        return Ok(());
    }
    let expected = spec.reason_hint.as_deref().map_or_else(
        || format!("text matching {pattern}"),
        |hint| format!("{hint} (pattern {pattern})"),
    );
    let shown: String = reason.chars().take(SHOWN).collect();
    let more = if reason.chars().count() > SHOWN {
        "…"
    } else {
        ""
    };
    Err(Refusal::Mismatch(format!(
        "AccessPolicy {policy_name} requires the reason to give {expected}; the reason \
         {shown:?}{more} does not"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: Option<&str>, hint: Option<&str>) -> AccessPolicySpec {
        let mut spec: AccessPolicySpec = serde_json::from_value(serde_json::json!({
            "type": "Role", "role": "edit", "approvalType": "Manual"
        }))
        .unwrap();
        spec.reason_pattern = pattern.map(str::to_owned);
        spec.reason_hint = hint.map(str::to_owned);
        spec
    }

    #[test]
    fn no_pattern_accepts_any_reason() {
        assert_eq!(check("p", &spec(None, None), "fix"), Ok(()));
    }

    #[test]
    fn a_ticket_pattern_accepts_a_ticket_and_refuses_a_bare_word_with_the_hint() {
        let s = spec(
            Some("^(INC|CHG)-[0-9]+"),
            Some("an incident or change number, e.g. INC-1234"),
        );
        assert_eq!(check("p", &s, "INC-1234 pods crash"), Ok(()));
        let Err(Refusal::Mismatch(message)) = check("p", &s, "fix") else {
            panic!("a bare word must not match")
        };
        assert!(message.contains("an incident or change number, e.g. INC-1234"));
        assert!(message.contains("\"fix\""));
        // Anchored: a ticket number later in the text is not enough.
        assert!(check("p", &s, "see INC-1").is_err());
    }

    #[test]
    fn a_newline_in_the_reason_is_quoted_not_echoed_raw() {
        let s = spec(Some("^INC-[0-9]+$"), None);
        let Err(Refusal::Mismatch(message)) = check("p", &s, "INC-1\nforged: line") else {
            panic!("`$` without multi-line mode must not match before a newline")
        };
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_huge_reason_is_quoted_only_in_part() {
        let s = spec(Some("^INC-[0-9]+"), None);
        let huge = "x".repeat(2_000_000);
        let Err(Refusal::Mismatch(message)) = check("p", &s, &huge) else {
            panic!("no ticket in it")
        };
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains('…'));
    }

    #[test]
    fn a_bad_pattern_is_named_with_what_to_write() {
        let e = compile("(INC").unwrap_err();
        assert!(e.contains("not a valid regular expression"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(matches!(
            check("p", &spec(Some("(INC"), None), "INC-1"),
            Err(Refusal::BadPattern(_))
        ));
    }

    #[test]
    fn a_pattern_too_large_to_build_is_refused() {
        assert!(compile("[a-z]{1000}{1000}").is_err());
    }
}
