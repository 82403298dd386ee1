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

/// Weights, thresholds and SLA due times. Defaults follow the service centers' priority
/// engine: severity critical 5 / major 3 / minor 1, tier enterprise 5 / paid 3 / free 1, impact
/// 1..5, each times its weight (1), plus one point per `age_step_hours` (24) a ticket stays open,
/// at most `max_age_points` (5); P0 at 16 or more, P1 from 11, P2 from 6, P3 below. A ticket is
/// due 4, 8, 24 or 72 hours after it was raised for P0, P1, P2, P3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct PriorityPolicy {
    pub severity_weight: u32,
    pub tier_weight: u32,
    pub impact_weight: u32,
    pub age_step_hours: u32,
    pub max_age_points: u32,
    pub p0_from: u32,
    pub p1_from: u32,
    pub p2_from: u32,
    pub sla_hours_p0: u32,
    pub sla_hours_p1: u32,
    pub sla_hours_p2: u32,
    pub sla_hours_p3: u32,
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
            sla_hours_p0: 4,
            sla_hours_p1: 8,
            sla_hours_p2: 24,
            sla_hours_p3: 72,
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

    /// When a ticket of `level` raised at `raised_at` is due.
    pub fn due_at(&self, level: PriorityLevel, raised_at: DateTime<Utc>) -> DateTime<Utc> {
        let hours = match level {
            PriorityLevel::P0 => self.sla_hours_p0,
            PriorityLevel::P1 => self.sla_hours_p1,
            PriorityLevel::P2 => self.sla_hours_p2,
            PriorityLevel::P3 => self.sla_hours_p3,
        };
        raised_at + chrono::Duration::hours(i64::from(hours))
    }

    /// Refuses settings that would make levels meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.p0_from > self.p1_from && self.p1_from > self.p2_from) {
            return Err("priority thresholds must satisfy p0_from > p1_from > p2_from".into());
        }
        Ok(())
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

    #[test]
    fn sla_due_times_follow_the_level() {
        let p = PriorityPolicy::default();
        let raised = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            p.due_at(PriorityLevel::P0, raised),
            raised + chrono::Duration::hours(4)
        );
        assert_eq!(
            p.due_at(PriorityLevel::P3, raised),
            raised + chrono::Duration::hours(72)
        );
        assert!(p.validate().is_ok());
        assert!(PriorityPolicy { p1_from: 20, ..p }.validate().is_err());
    }
}
