//! The tabs of a session's browser as participants see them (pure logic): which tabs exist, in
//! what order, which one the screen shows, and which one becomes active when one closes. The
//! driver keeps the browser side (CDP targets and pages) in step with it.

use serde::Serialize;

/// Most tabs a session keeps open. A page that opens more (a popup storm) has the extra ones
/// closed as they open.
pub const MAX_TABS: usize = 10;

/// A tab as participants see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TabInfo {
    /// The session's number for the tab (participants' `tab` messages name it).
    pub id: u32,
    pub url: String,
    pub title: String,
    /// Whether the tab's page waits on a JavaScript dialog.
    pub dialog: bool,
}

/// One tab: the browser's target id and what participants see of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tab {
    target: String,
    /// The target that opened it (a popup's opener), to go back to when it closes.
    opener: Option<String>,
    info: TabInfo,
}

/// The tabs, in strip order, and the active one.
#[derive(Debug, Clone, Default)]
pub struct Tabs {
    tabs: Vec<Tab>,
    active: Option<String>,
    next_id: u32,
}

/// What [`Tabs::opened`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new tab, now active (the browser opened it for the page or for a participant).
    Added(u32),
    /// Already known (the event came twice).
    Known,
    /// Over [`MAX_TABS`]: close it.
    TooMany,
}

impl Tabs {
    /// A list with one tab, `target`, active.
    pub fn new(target: &str, url: &str) -> Self {
        let mut tabs = Tabs::default();
        tabs.opened(target, None, url);
        tabs
    }

    /// A tab opened (a popup, a link to a new tab, or one a participant asked for): it goes
    /// after its opener (or last) and becomes the active one, as in a desktop browser.
    pub fn opened(&mut self, target: &str, opener: Option<&str>, url: &str) -> Opened {
        if self.index(target).is_some() {
            return Opened::Known;
        }
        if self.is_full() {
            return Opened::TooMany;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let tab = Tab {
            target: target.to_string(),
            opener: opener.map(str::to_string),
            info: TabInfo {
                id,
                url: url.to_string(),
                title: String::new(),
                dialog: false,
            },
        };
        // After the opener and the other tabs it already opened, like a browser's tab strip.
        let at = opener
            .and_then(|o| self.index(o))
            .map(|i| {
                let mut at = i + 1;
                while self
                    .tabs
                    .get(at)
                    .is_some_and(|t| t.opener.as_deref() == opener)
                {
                    at += 1;
                }
                at
            })
            .unwrap_or(self.tabs.len());
        self.tabs.insert(at, tab);
        self.active = Some(target.to_string());
        Opened::Added(id)
    }

    /// A tab closed. Returns the target that is active now when the closed one was active (its
    /// opener if still open, else the tab to its right, else to its left); `None` when the
    /// active tab did not change. [`Tabs::is_empty`] tells whether none is left.
    pub fn closed(&mut self, target: &str) -> Option<String> {
        let i = self.index(target)?;
        let tab = self.tabs.remove(i);
        if self.active.as_deref() != Some(target) {
            return None;
        }
        let next = tab.opener.filter(|o| self.index(o).is_some()).or_else(|| {
            self.tabs
                .get(i)
                .or(self.tabs.last())
                .map(|t| t.target.clone())
        });
        self.active.clone_from(&next);
        next
    }

    /// Makes tab `target` active (if it is open).
    pub fn set_active(&mut self, target: &str) {
        if self.index(target).is_some() {
            self.active = Some(target.to_string());
        }
    }

    /// What participants see of tab `target`.
    pub fn info(&self, target: &str) -> Option<TabInfo> {
        self.index(target).map(|i| self.tabs[i].info.clone())
    }

    /// The target of tab `id`.
    pub fn target_of(&self, id: u32) -> Option<&str> {
        self.tabs
            .iter()
            .find(|t| t.info.id == id)
            .map(|t| t.target.as_str())
    }

    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    pub fn active_id(&self) -> Option<u32> {
        let active = self.active.as_deref()?;
        self.tabs
            .iter()
            .find(|t| t.target == active)
            .map(|t| t.info.id)
    }

    pub fn is_empty(&self) -> bool {
        self.tabs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tabs.len()
    }

    /// Whether no tab can open: [`MAX_TABS`] are.
    pub fn is_full(&self) -> bool {
        self.tabs.len() >= MAX_TABS
    }

    /// Sets what a tab shows; returns whether anything changed.
    pub fn update(
        &mut self,
        target: &str,
        url: Option<&str>,
        title: Option<&str>,
        dialog: Option<bool>,
    ) -> bool {
        let Some(i) = self.index(target) else {
            return false;
        };
        let info = &mut self.tabs[i].info;
        let before = info.clone();
        if let Some(url) = url {
            info.url = url.to_string();
        }
        if let Some(title) = title {
            info.title = title
                .chars()
                .take(crate::protocol::MAX_TITLE_CHARS)
                .collect();
        }
        if let Some(dialog) = dialog {
            info.dialog = dialog;
        }
        *info != before
    }

    /// Every tab, in strip order.
    pub fn list(&self) -> Vec<TabInfo> {
        self.tabs.iter().map(|t| t.info.clone()).collect()
    }

    fn index(&self, target: &str) -> Option<usize> {
        self.tabs.iter().position(|t| t.target == target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(tabs: &Tabs) -> Vec<u32> {
        tabs.list().iter().map(|t| t.id).collect()
    }

    #[test]
    fn a_popup_goes_after_its_opener_and_becomes_active() {
        let mut tabs = Tabs::new("a", "https://a.test/");
        assert_eq!(tabs.opened("b", None, "about:blank"), Opened::Added(2));
        assert_eq!(
            tabs.opened("c", Some("a"), "https://c.test/"),
            Opened::Added(3)
        );
        assert_eq!(
            tabs.opened("d", Some("a"), "https://d.test/"),
            Opened::Added(4)
        );
        // a's popups follow it in the order they opened, before the unrelated tab.
        assert_eq!(ids(&tabs), [1, 3, 4, 2]);
        assert_eq!(tabs.active(), Some("d"));
        assert_eq!(tabs.active_id(), Some(4));
        assert_eq!(tabs.opened("d", Some("a"), "x"), Opened::Known);
    }

    #[test]
    fn closing_the_active_popup_returns_to_its_opener() {
        let mut tabs = Tabs::new("a", "");
        tabs.opened("b", None, "");
        tabs.opened("c", Some("a"), "");
        assert_eq!(tabs.closed("c").as_deref(), Some("a"));
        assert_eq!(tabs.active(), Some("a"));
    }

    #[test]
    fn closing_the_active_tab_goes_right_then_left() {
        let mut tabs = Tabs::new("a", "");
        tabs.opened("b", None, "");
        tabs.opened("c", None, "");
        tabs.set_active(tabs.target_of(2).expect("tab 2").to_string().as_str());
        assert_eq!(tabs.active(), Some("b"));
        assert_eq!(tabs.closed("b").as_deref(), Some("c"));
        assert_eq!(tabs.closed("c").as_deref(), Some("a"));
        // The last tab closed: nothing is active, the driver opens a blank one.
        assert_eq!(tabs.closed("a"), None);
        assert!(tabs.is_empty());
        assert_eq!(tabs.active(), None);
    }

    #[test]
    fn closing_a_background_tab_keeps_the_active_one() {
        let mut tabs = Tabs::new("a", "");
        tabs.opened("b", Some("a"), "");
        assert_eq!(tabs.closed("a"), None);
        assert_eq!(tabs.active(), Some("b"));
        // Its opener is gone: closing it falls back to a neighbour (none left here).
        assert_eq!(tabs.closed("b"), None);
        assert_eq!(tabs.closed("unknown"), None);
    }

    #[test]
    fn a_popup_storm_is_capped() {
        let mut tabs = Tabs::new("t0", "");
        for i in 1..MAX_TABS {
            assert!(matches!(
                tabs.opened(&format!("t{i}"), Some("t0"), ""),
                Opened::Added(_)
            ));
        }
        assert_eq!(tabs.opened("one-too-many", Some("t0"), ""), Opened::TooMany);
        assert_eq!(tabs.len(), MAX_TABS);
        assert!(tabs.is_full());
        assert!(tabs.list().iter().all(|t| t.id <= MAX_TABS as u32));
    }

    #[test]
    fn updates_report_changes_and_cap_titles() {
        let mut tabs = Tabs::new("a", "about:blank");
        assert!(tabs.update("a", Some("https://a.test/"), None, None));
        assert!(!tabs.update("a", Some("https://a.test/"), None, None));
        let long = "t".repeat(5000);
        assert!(tabs.update("a", None, Some(&long), Some(true)));
        let info = &tabs.list()[0];
        assert_eq!(info.title.chars().count(), crate::protocol::MAX_TITLE_CHARS);
        assert!(info.dialog);
        assert!(!tabs.update("missing", Some("x"), None, None));
        assert_eq!(tabs.target_of(1), Some("a"));
        assert_eq!(tabs.target_of(99), None);
        tabs.set_active("missing");
        assert_eq!(tabs.active(), Some("a"));
    }
}
