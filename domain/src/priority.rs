//! The priority engine: a weighted score from severity, customer tier, impact and age, and the
//! level (P0..P3) it falls in. Pure; the age comes from the caller's `now`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Impact, Severity, Tier};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PriorityLevel {
    P0,
    P1,
    P2,
    P3,
}

/// Weights and thresholds. Defaults follow the service centers' priority engine: severity
/// critical 5 / major 3 / minor 1, tier enterprise 5 / paid 3 / free 1, impact 1..5, plus one
/// point per `age_step_hours` a ticket stays open (at most `max_age_points`); P0 at 16 or more,
/// P1 from 11, P2 from 6, P3 below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct PriorityPolicy {
    pub severity_weight: u32,
    pub tier_weight: u32,
    pub impact_weight: u32,
    pub age_step_hours: u32,
    pub max_age_points: u32,
    pub p0_from: u32,
    pub p1_from: u32,
    pub p2_from: u32,
}

impl Default for PriorityPolicy {
    fn default() -> Self {
        Self {
            severity_weight: 1,
            tier_weight: 1,
            impact_weight: 1,
            age_step_hours: 24,
            max_age_points: 5,
            p0_from: 16,
            p1_from: 11,
            p2_from: 6,
        }
    }
}

/// The inputs of one ticket's priority.
#[derive(Debug, Clone, Copy)]
pub struct PriorityInputs {
    pub severity: Severity,
    pub tier: Tier,
    pub impact: Impact,
    pub raised_at: DateTime<Utc>,
}

impl PriorityPolicy {
    /// Score without the age component, fixed for the life of a ticket.
    pub fn base_score(&self, severity: Severity, tier: Tier, impact: Impact) -> u32 {
        let severity = match severity {
            Severity::Critical => 5,
            Severity::Major => 3,
            Severity::Minor => 1,
        };
        let tier = match tier {
            Tier::Enterprise => 5,
            Tier::Paid => 3,
            Tier::Free => 1,
        };
        self.severity_weight * severity
            + self.tier_weight * tier
            + self.impact_weight * u32::from(impact.get())
    }

    /// Points a ticket has gained by waiting since `raised_at`.
    pub fn age_points(&self, raised_at: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
        if self.age_step_hours == 0 {
            return 0;
        }
        let hours = (now - raised_at).num_hours().max(0);
        let steps = hours / i64::from(self.age_step_hours);
        u32::try_from(steps)
            .unwrap_or(u32::MAX)
            .min(self.max_age_points)
    }

    pub fn score(&self, inputs: PriorityInputs, now: DateTime<Utc>) -> u32 {
        self.base_score(inputs.severity, inputs.tier, inputs.impact)
            + self.age_points(inputs.raised_at, now)
    }

    pub fn level(&self, score: u32) -> PriorityLevel {
        if score >= self.p0_from {
            PriorityLevel::P0
        } else if score >= self.p1_from {
            PriorityLevel::P1
        } else if score >= self.p2_from {
            PriorityLevel::P2
        } else {
            PriorityLevel::P3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn impact(n: i64) -> Impact {
        Impact::parse("impact", n).expect("valid impact")
    }

    #[test]
    fn levels_follow_the_thresholds() {
        let p = PriorityPolicy::default();
        assert_eq!(p.level(16), PriorityLevel::P0);
        assert_eq!(p.level(15), PriorityLevel::P1);
        assert_eq!(p.level(11), PriorityLevel::P1);
        assert_eq!(p.level(10), PriorityLevel::P2);
        assert_eq!(p.level(6), PriorityLevel::P2);
        assert_eq!(p.level(5), PriorityLevel::P3);
    }

    #[test]
    fn tickets_age_up_while_waiting_and_the_age_is_capped() {
        let p = PriorityPolicy::default();
        let raised = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let inputs = PriorityInputs {
            severity: Severity::Critical,
            tier: Tier::Enterprise,
            impact: impact(5),
            raised_at: raised,
        };
        assert_eq!(p.score(inputs, raised), 15);
        assert_eq!(p.score(inputs, raised + chrono::Duration::hours(24)), 16);
        assert_eq!(p.score(inputs, raised + chrono::Duration::days(365)), 20);
        // A clock behind the raise time never lowers the score.
        assert_eq!(p.score(inputs, raised - chrono::Duration::days(3)), 15);
    }
}
