//! The small rule language the Exchange and RFC 4954 tables are written in.
//!
//! A rule matches on the basic code, the enhanced code's `subject.detail` (any class: Exchange
//! sends `451 5.7.3`) and lowercase substrings of the reply text, and carries a verdict.

use postern_smtp::{EnhancedCode, ReplyCode};

use crate::category::{Category, Class, Scope};

/// Which basic reply codes a rule accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Codes {
    /// Any code.
    Any,
    /// Exactly these codes.
    Exact(&'static [u16]),
    /// Codes with this first digit.
    Digit(u16),
}

/// How the enhanced-code and text conditions combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// Both must hold (a condition that is absent holds).
    And,
    /// Either may hold (an absent condition does not count).
    Or,
}

/// The class a matching rule gives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClassRule {
    /// The basic code's first digit decides.
    FromCode,
    /// Forced: the documented overrides.
    Force(Class),
}

/// Whether a matching rule retries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RetryRule {
    /// Retry exactly when the class is transient.
    FromClass,
    /// Never retry unchanged (a transient class then means "hold for the operator").
    Never,
}

/// One classification rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub(crate) id: &'static str,
    codes: Codes,
    /// `(subject, lowest detail, highest detail)`.
    enhanced: Option<(u16, u16, u16)>,
    /// Lowercase needles; any one matches.
    text: &'static [&'static str],
    join: Join,
    pub(crate) category: Category,
    class: ClassRule,
    retry: RetryRule,
    operator_action: Option<bool>,
    scope: Option<Scope>,
    remedy: Option<&'static str>,
}

/// The verdict a rule gives for a particular code.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    pub(crate) rule: &'static str,
    pub(crate) class: Class,
    pub(crate) category: Category,
    pub(crate) retry: bool,
    pub(crate) operator_action: bool,
    pub(crate) scope: Scope,
    pub(crate) remedy: &'static str,
}

/// The class the basic code alone gives.
pub(crate) const fn class_of(code: ReplyCode) -> Class {
    match code.get() / 100 {
        2 | 3 => Class::Success,
        4 => Class::Transient,
        _ => Class::Permanent,
    }
}

impl Rule {
    /// A rule that matches everything until narrowed.
    pub(crate) const fn new(id: &'static str, category: Category) -> Self {
        Self {
            id,
            codes: Codes::Any,
            enhanced: None,
            text: &[],
            join: Join::And,
            category,
            class: ClassRule::FromCode,
            retry: RetryRule::FromClass,
            operator_action: None,
            scope: None,
            remedy: None,
        }
    }
    pub(crate) const fn codes(mut self, codes: &'static [u16]) -> Self {
        self.codes = Codes::Exact(codes);
        self
    }
    pub(crate) const fn digit(mut self, digit: u16) -> Self {
        self.codes = Codes::Digit(digit);
        self
    }
    pub(crate) const fn enh(mut self, subject: u16, lo: u16, hi: u16) -> Self {
        self.enhanced = Some((subject, lo, hi));
        self
    }
    pub(crate) const fn text(mut self, needles: &'static [&'static str]) -> Self {
        self.text = needles;
        self
    }
    /// Enhanced code *or* text (default: and).
    pub(crate) const fn or(mut self) -> Self {
        self.join = Join::Or;
        self
    }
    pub(crate) const fn force(mut self, class: Class) -> Self {
        self.class = ClassRule::Force(class);
        self
    }
    pub(crate) const fn never_retry(mut self) -> Self {
        self.retry = RetryRule::Never;
        self
    }
    pub(crate) const fn operator(mut self, yes: bool) -> Self {
        self.operator_action = Some(yes);
        self
    }
    pub(crate) const fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }
    pub(crate) const fn remedy(mut self, remedy: &'static str) -> Self {
        self.remedy = Some(remedy);
        self
    }

    /// Whether the rule matches. `lower` is the reply text in ASCII lowercase.
    pub(crate) fn matches(
        &self,
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        lower: &[u8],
    ) -> bool {
        let code_ok = match self.codes {
            Codes::Any => true,
            Codes::Exact(list) => list.contains(&code.get()),
            Codes::Digit(d) => code.get() / 100 == d,
        };
        if !code_ok {
            return false;
        }
        let enh = self.enhanced.map(|(s, lo, hi)| {
            enhanced.is_some_and(|e| e.subject == s && (lo..=hi).contains(&e.detail))
        });
        // The text search is the expensive part: only run it when it can change the answer.
        let text = || self.text.is_empty() || contains_any(lower, self.text);
        match self.join {
            Join::And => enh.unwrap_or(true) && text(),
            Join::Or => enh.unwrap_or(false) || (!self.text.is_empty() && text()),
        }
    }

    /// The verdict for a reply with this basic code.
    pub(crate) fn verdict(&self, code: ReplyCode) -> Verdict {
        let class = match self.class {
            ClassRule::FromCode => class_of(code),
            ClassRule::Force(c) => c,
        };
        let retry = match self.retry {
            RetryRule::FromClass => class == Class::Transient,
            RetryRule::Never => false,
        };
        Verdict {
            rule: self.id,
            class,
            category: self.category,
            retry,
            operator_action: self
                .operator_action
                .unwrap_or_else(|| self.category.operator_action()),
            scope: self.scope.unwrap_or_else(|| self.category.scope()),
            remedy: self.remedy.unwrap_or_else(|| self.category.remedy()),
        }
    }
}

/// Whether `hay` contains any of `needles`.
pub(crate) fn contains_any(hay: &[u8], needles: &[&str]) -> bool {
    needles
        .iter()
        .any(|n| memchr::memmem::find(hay, n.as_bytes()).is_some())
}
