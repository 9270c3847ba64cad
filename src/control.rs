//! Who may act on the page: the session's control policy and its state machine. Pure logic with
//! explicit times, so every rule is tested without a browser or a clock.
//!
//! - `shared`: everyone whose role allows input acts at once.
//! - `exclusive`: one participant holds control. A controller asks (`request`); the holder or
//!   the owner grants or denies; the holder releases; the owner can always take it. Control
//!   nobody asked for goes to the first who asks. A holder idle for the idle timeout, or gone,
//!   loses it.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Default time a holder may stay idle before control is released.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Shared,
    Exclusive,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Shared => "shared",
            Policy::Exclusive => "exclusive",
        }
    }
}

/// Why input was refused, or a control action was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("your link lets you watch, not control the page")]
    ViewOnly,
    #[error("someone else has control; ask for it to act")]
    NotHolder,
    #[error("only the session owner can do that")]
    OwnerOnly,
    #[error("only the participant with control or the owner can do that")]
    HolderOrOwner,
    #[error("that participant did not ask for control")]
    NotRequested,
    #[error("control is shared: everyone with control rights may act")]
    Shared,
}

/// Who is asking: their id and what their role allows.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub id: &'a str,
    pub can_input: bool,
    pub owner: bool,
}

/// The control state of a session.
#[derive(Debug, Clone)]
pub struct Control {
    policy: Policy,
    holder: Option<String>,
    /// Participants asking for control, oldest first.
    requests: Vec<String>,
    idle: Duration,
    last_action: Instant,
}

/// The state as participants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlView {
    pub policy: Policy,
    pub holder: Option<String>,
    pub requests: Vec<String>,
    pub idle_secs: u64,
}

/// What a control action changed, for the notices it warrants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// State changed; broadcast it.
    Changed,
    /// `id`'s request was denied; tell them.
    Denied(String),
    /// Nothing to do (e.g. asking again).
    Unchanged,
}

impl Control {
    pub fn new(policy: Policy, idle: Duration, now: Instant) -> Self {
        Control {
            policy,
            holder: None,
            requests: Vec::new(),
            idle,
            last_action: now,
        }
    }

    pub fn view(&self) -> ControlView {
        ControlView {
            policy: self.policy,
            holder: self.holder.clone(),
            requests: self.requests.clone(),
            idle_secs: self.idle.as_secs(),
        }
    }

    /// Whether `actor` may send input now; an allowed input also keeps control from idling out.
    pub fn may_act(&mut self, actor: Actor<'_>, now: Instant) -> Result<(), Refusal> {
        if !actor.can_input {
            return Err(Refusal::ViewOnly);
        }
        match self.policy {
            Policy::Shared => Ok(()),
            Policy::Exclusive if self.holder.as_deref() == Some(actor.id) => {
                self.last_action = now;
                Ok(())
            }
            Policy::Exclusive => Err(Refusal::NotHolder),
        }
    }

    /// Owner only: changes the policy. Going exclusive gives control to the owner.
    pub fn set_policy(
        &mut self,
        actor: Actor<'_>,
        policy: Policy,
        now: Instant,
    ) -> Result<Outcome, Refusal> {
        if !actor.owner {
            return Err(Refusal::OwnerOnly);
        }
        if policy == self.policy {
            return Ok(Outcome::Unchanged);
        }
        self.policy = policy;
        self.requests.clear();
        self.holder = (policy == Policy::Exclusive).then(|| actor.id.to_string());
        self.last_action = now;
        Ok(Outcome::Changed)
    }

    /// Asks for control; granted at once when nobody holds it.
    pub fn request(&mut self, actor: Actor<'_>, now: Instant) -> Result<Outcome, Refusal> {
        if !actor.can_input {
            return Err(Refusal::ViewOnly);
        }
        if self.policy == Policy::Shared {
            return Err(Refusal::Shared);
        }
        if self.holder.as_deref() == Some(actor.id) || self.requests.iter().any(|r| r == actor.id) {
            return Ok(Outcome::Unchanged);
        }
        if self.holder.is_none() {
            self.give(actor.id, now);
        } else {
            self.requests.push(actor.id.to_string());
        }
        Ok(Outcome::Changed)
    }

    /// The holder or the owner gives control to `to`, who asked for it.
    pub fn grant(&mut self, actor: Actor<'_>, to: &str, now: Instant) -> Result<Outcome, Refusal> {
        self.holder_or_owner(actor)?;
        if !self.requests.iter().any(|r| r == to) {
            return Err(Refusal::NotRequested);
        }
        self.give(to, now);
        Ok(Outcome::Changed)
    }

    /// The holder or the owner turns down `to`'s request.
    pub fn deny(&mut self, actor: Actor<'_>, to: &str) -> Result<Outcome, Refusal> {
        self.holder_or_owner(actor)?;
        let before = self.requests.len();
        self.requests.retain(|r| r != to);
        if self.requests.len() == before {
            return Err(Refusal::NotRequested);
        }
        Ok(Outcome::Denied(to.to_string()))
    }

    /// The holder gives control up (and a requester may withdraw a request).
    pub fn release(&mut self, actor: Actor<'_>) -> Outcome {
        if self.holder.as_deref() == Some(actor.id) {
            self.holder = None;
            return Outcome::Changed;
        }
        let before = self.requests.len();
        self.requests.retain(|r| r != actor.id);
        if self.requests.len() != before {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    /// The owner takes control, whoever has it.
    pub fn take(&mut self, actor: Actor<'_>, now: Instant) -> Result<Outcome, Refusal> {
        if !actor.owner {
            return Err(Refusal::OwnerOnly);
        }
        if self.policy == Policy::Shared {
            return Err(Refusal::Shared);
        }
        if self.holder.as_deref() == Some(actor.id) {
            return Ok(Outcome::Unchanged);
        }
        self.give(actor.id, now);
        Ok(Outcome::Changed)
    }

    /// A participant left: they hold nothing and ask for nothing any more.
    pub fn left(&mut self, id: &str) -> Outcome {
        let before = (self.holder.clone(), self.requests.len());
        if self.holder.as_deref() == Some(id) {
            self.holder = None;
        }
        self.requests.retain(|r| r != id);
        if (self.holder.clone(), self.requests.len()) != before {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    /// Releases control from a holder idle for the idle timeout.
    pub fn tick(&mut self, now: Instant) -> Outcome {
        if self.holder.is_some() && now.saturating_duration_since(self.last_action) >= self.idle {
            self.holder = None;
            return Outcome::Changed;
        }
        Outcome::Unchanged
    }

    fn give(&mut self, to: &str, now: Instant) {
        self.requests.retain(|r| r != to);
        self.holder = Some(to.to_string());
        self.last_action = now;
    }

    fn holder_or_owner(&self, actor: Actor<'_>) -> Result<(), Refusal> {
        if actor.owner || self.holder.as_deref() == Some(actor.id) {
            Ok(())
        } else {
            Err(Refusal::HolderOrOwner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Actor<'static> = Actor {
        id: "p1",
        can_input: true,
        owner: true,
    };
    const ANN: Actor<'static> = Actor {
        id: "p2",
        can_input: true,
        owner: false,
    };
    const BOB: Actor<'static> = Actor {
        id: "p3",
        can_input: true,
        owner: false,
    };
    const EVE: Actor<'static> = Actor {
        id: "p4",
        can_input: false,
        owner: false,
    };

    fn exclusive(now: Instant) -> Control {
        let mut c = Control::new(Policy::Shared, Duration::from_secs(60), now);
        assert_eq!(
            c.set_policy(OWNER, Policy::Exclusive, now),
            Ok(Outcome::Changed)
        );
        c
    }

    #[test]
    fn shared_lets_every_input_role_act_and_never_a_viewer() {
        let t = Instant::now();
        let mut c = Control::new(Policy::Shared, DEFAULT_IDLE, t);
        assert_eq!(c.may_act(OWNER, t), Ok(()));
        assert_eq!(c.may_act(ANN, t), Ok(()));
        assert_eq!(c.may_act(EVE, t), Err(Refusal::ViewOnly));
        assert_eq!(c.request(ANN, t), Err(Refusal::Shared));
    }

    #[test]
    fn exclusive_moves_control_by_request_grant_and_take_back() {
        let t = Instant::now();
        let mut c = exclusive(t);
        // Going exclusive gives the owner control.
        assert_eq!(c.view().holder.as_deref(), Some("p1"));
        assert_eq!(c.may_act(ANN, t), Err(Refusal::NotHolder));
        // Ann and Bob ask; only the holder or owner may grant, and only someone who asked.
        assert_eq!(c.request(ANN, t), Ok(Outcome::Changed));
        assert_eq!(c.request(BOB, t), Ok(Outcome::Changed));
        assert_eq!(c.request(ANN, t), Ok(Outcome::Unchanged));
        assert_eq!(c.view().requests, ["p2", "p3"]);
        assert_eq!(c.grant(BOB, "p3", t), Err(Refusal::HolderOrOwner));
        assert_eq!(c.grant(OWNER, "p4", t), Err(Refusal::NotRequested));
        assert_eq!(c.grant(OWNER, "p2", t), Ok(Outcome::Changed));
        assert_eq!(c.may_act(ANN, t), Ok(()));
        assert_eq!(c.may_act(OWNER, t), Err(Refusal::NotHolder));
        // The holder turns Bob down; Bob is told.
        assert_eq!(c.deny(ANN, "p3"), Ok(Outcome::Denied("p3".into())));
        assert!(c.view().requests.is_empty());
        // The owner can always take it back.
        assert_eq!(c.take(OWNER, t), Ok(Outcome::Changed));
        assert_eq!(c.may_act(OWNER, t), Ok(()));
        assert_eq!(c.may_act(ANN, t), Err(Refusal::NotHolder));
        assert_eq!(c.take(ANN, t), Err(Refusal::OwnerOnly));
        // A viewer can neither ask nor act.
        assert_eq!(c.request(EVE, t), Err(Refusal::ViewOnly));
    }

    #[test]
    fn release_leave_and_free_control() {
        let t = Instant::now();
        let mut c = exclusive(t);
        assert_eq!(c.release(OWNER), Outcome::Changed);
        assert_eq!(c.view().holder, None);
        // Nobody holds it: the first to ask gets it at once.
        assert_eq!(c.request(BOB, t), Ok(Outcome::Changed));
        assert_eq!(c.view().holder.as_deref(), Some("p3"));
        assert_eq!(c.request(ANN, t), Ok(Outcome::Changed));
        // Bob leaves: control is free, Ann still asks.
        assert_eq!(c.left("p3"), Outcome::Changed);
        assert_eq!(c.view().holder, None);
        assert_eq!(c.view().requests, ["p2"]);
        // Ann withdraws.
        assert_eq!(c.release(ANN), Outcome::Changed);
        assert_eq!(c.release(ANN), Outcome::Unchanged);
    }

    #[test]
    fn an_idle_holder_loses_control_and_acting_keeps_it() {
        let t = Instant::now();
        let mut c = exclusive(t);
        c.request(ANN, t).expect("request");
        c.grant(OWNER, "p2", t).expect("grant");
        let s = Duration::from_secs;
        assert_eq!(c.tick(t + s(59)), Outcome::Unchanged);
        // Typing at 50 s restarts the clock.
        assert_eq!(c.may_act(ANN, t + s(50)), Ok(()));
        assert_eq!(c.tick(t + s(109)), Outcome::Unchanged);
        assert_eq!(c.tick(t + s(110)), Outcome::Changed);
        assert_eq!(c.view().holder, None);
        assert_eq!(c.may_act(ANN, t + s(111)), Err(Refusal::NotHolder));
        // Back to shared: everyone acts, nobody holds.
        assert_eq!(
            c.set_policy(ANN, Policy::Shared, t),
            Err(Refusal::OwnerOnly)
        );
        assert_eq!(c.set_policy(OWNER, Policy::Shared, t), Ok(Outcome::Changed));
        assert_eq!(c.may_act(BOB, t), Ok(()));
    }
}
