//! The small rule language the Exchange and RFC 4954 tables are written in.
//!
//! A rule matches on the basic code, the enhanced code's `subject.detail` (any class: Exchange
//! sends `451 5.7.3`) and lowercase substrings of the reply text, and carries a verdict.

use std::cell::OnceCell;
use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
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

    /// Whether the rule matches. `text_hit` says whether the reply text contains one of the
    /// rule's needles; it is called only when the answer depends on it (the text search is
    /// the expensive part).
    fn matches(
        &self,
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        text_hit: impl FnOnce() -> bool,
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
        let text = || self.text.is_empty() || text_hit();
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

/// The most distinct needles one [`Table`] may hold (the size of its hit set).
const MAX_NEEDLES: usize = 512;

/// Which of a table's needles a reply text contains.
struct Hits([u64; MAX_NEEDLES / 64]);

impl Hits {
    fn contains(&self, id: u16) -> bool {
        self.0[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }
}

/// Rules in the order they are tried, with every text needle of every rule compiled into one
/// Aho-Corasick automaton: a reply text is searched once per table, whatever the number of
/// rules and needles, instead of once per needle.
pub(crate) struct Table {
    rules: Vec<&'static Rule>,
    /// For each rule, the ids of its needles in `search`.
    needles: Vec<Box<[u16]>>,
    search: AhoCorasick,
}

impl Table {
    /// Compiles `tables`, tried in the order given.
    ///
    /// # Panics
    /// If the tables hold more than [`MAX_NEEDLES`] distinct needles: static data, caught by
    /// the crate's tests.
    pub(crate) fn new(tables: &[&'static [Rule]]) -> Self {
        let mut ids: HashMap<&'static str, u16> = HashMap::new();
        let mut patterns: Vec<&'static str> = Vec::new();
        let rules: Vec<&'static Rule> = tables.iter().flat_map(|t| t.iter()).collect();
        let needles = rules
            .iter()
            .map(|rule| {
                rule.text
                    .iter()
                    .map(|needle| {
                        *ids.entry(needle).or_insert_with(|| {
                            patterns.push(needle);
                            u16::try_from(patterns.len() - 1).expect("needle count fits u16")
                        })
                    })
                    .collect()
            })
            .collect();
        assert!(
            patterns.len() <= MAX_NEEDLES,
            "{} rule needles, more than the {MAX_NEEDLES} a table holds",
            patterns.len()
        );
        // A few hundred short needles: a DFA is small (tens of KiB) and the fastest per byte.
        let search = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .expect("rule needles compile");
        Self {
            rules,
            needles,
            search,
        }
    }

    /// The first rule that matches. `lower` is the reply text in ASCII lowercase; it is
    /// searched at most once, and only if a rule's answer depends on its text.
    pub(crate) fn first_match(
        &self,
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        lower: &[u8],
    ) -> Option<&'static Rule> {
        let hits = OnceCell::new();
        let hits = || {
            hits.get_or_init(|| {
                let mut set = Hits([0; MAX_NEEDLES / 64]);
                for m in self.search.find_overlapping_iter(lower) {
                    let id = m.pattern().as_usize();
                    set.0[id / 64] |= 1 << (id % 64);
                }
                set
            })
        };
        self.rules
            .iter()
            .zip(&self.needles)
            .find(|(rule, needles)| {
                rule.matches(code, enhanced, || {
                    let hits = hits();
                    needles.iter().any(|&id| hits.contains(id))
                })
            })
            .map(|(rule, _)| *rule)
    }

    /// The rules, in order.
    #[cfg(test)]
    pub(crate) fn rules(&self) -> impl Iterator<Item = &'static Rule> + '_ {
        self.rules.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_smtp::StatusClass;
    use proptest::prelude::*;

    /// The obvious definition the automaton must agree with: one substring search per needle.
    fn reference(
        table: &Table,
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        lower: &[u8],
    ) -> Option<&'static str> {
        table
            .rules()
            .find(|r| {
                r.matches(code, enhanced, || {
                    r.text
                        .iter()
                        .any(|n| memchr::memmem::find(lower, n.as_bytes()).is_some())
                })
            })
            .map(|r| r.id)
    }

    /// Compiled once: building an automaton in a debug build is not free.
    fn tables() -> &'static [Table; 2] {
        static TABLES: std::sync::LazyLock<[Table; 2]> = std::sync::LazyLock::new(|| {
            [
                Table::new(&[crate::exchange::RULES, crate::generic::RFC_RULES]),
                Table::new(&[crate::generic::TEXT_RULES]),
            ]
        });
        &TABLES
    }

    fn all_needles() -> Vec<&'static str> {
        crate::exchange::RULES
            .iter()
            .chain(crate::generic::RFC_RULES)
            .chain(crate::generic::TEXT_RULES)
            .flat_map(|r| r.text.iter().copied())
            .collect()
    }

    proptest! {
        /// Texts stitched from rule needles, their fragments and noise: the one-pass search
        /// picks the same rule as searching needle by needle.
        #[test]
        fn one_pass_search_agrees_with_needle_by_needle(
            parts in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3, "[a-z .]{0,6}"), 0..6),
            code in prop::sample::select(vec![250u16, 421, 432, 450, 451, 452, 454, 530, 535, 550, 551, 552, 553, 554]),
            enh in proptest::option::of((0usize..3, 0u16..=8, 0u16..=260)),
        ) {
            let needles = all_needles();
            let mut text = String::new();
            for (pick, how, noise) in &parts {
                let n = pick.get(&needles);
                match how {
                    0 => text.push_str(n),
                    1 => text.push_str(&n[..n.len() / 2]),
                    _ => text.push_str(&n[n.len() / 2..]),
                }
                text.push_str(noise);
            }
            let code = ReplyCode::new(code).unwrap();
            let class = [StatusClass::Success, StatusClass::PersistentTransient, StatusClass::Permanent];
            let enhanced = enh.and_then(|(c, s, d)| EnhancedCode::new(class[c], s, d));
            for table in tables() {
                prop_assert_eq!(
                    table.first_match(code, enhanced, text.as_bytes()).map(|r| r.id),
                    reference(table, code, enhanced, text.as_bytes()),
                    "{:?}", text
                );
            }
        }
    }

    #[test]
    fn every_needle_is_found_inside_another_text() {
        for table in tables() {
            for (rule, ids) in table.rules.iter().zip(&table.needles) {
                for (needle, &id) in rule.text.iter().zip(ids.iter()) {
                    let text = format!("xx {needle} yy");
                    let found = table
                        .search
                        .find_overlapping_iter(text.as_bytes())
                        .any(|m| m.pattern().as_usize() == usize::from(id));
                    assert!(found, "{needle:?} of {} not found", rule.id);
                }
            }
        }
    }
}
