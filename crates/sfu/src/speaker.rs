//! Who is speaking, from the audio levels publishers put in their packets
//! (RFC 6464: `ssrc-audio-level`, 0 dBov loudest to 127 silence).

use crate::ParticipantId;

/// Loudness below this (in dB above -127 dBov, i.e. quieter than -77
/// dBov) counts as silence.
const MIN_LOUDNESS: u32 = 50;

/// A challenger must be this much louder (dB, on average over a window)
/// than the current speaker to take over.
const MARGIN: u32 = 3;

/// ... for this many windows in a row (windows of silence between them
/// do not break the row), so a cough does not move the spotlight.
const HOLD_WINDOWS: u8 = 2;

/// Fewer packets than this in a window: too little to judge (at 50
/// packets a second a window of 300 ms holds 15).
const MIN_PACKETS: u32 = 5;

#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    sum: u32,
    packets: u32,
}

/// Picks the loudest participant of one room, window by window, with
/// hysteresis. Feed it every audio packet's level with
/// [`SpeakerDetector::level`], and call [`SpeakerDetector::window`] at
/// the end of each window (the IO shell's timer).
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    levels: Vec<(ParticipantId, Acc)>,
    current: Option<ParticipantId>,
    challenger: Option<(ParticipantId, u8)>,
}

impl SpeakerDetector {
    /// One audio packet's level (RFC 6464, `0..=127`, lower is louder).
    pub fn level(&mut self, participant: ParticipantId, level: u8) {
        let loudness = 127u32.saturating_sub(u32::from(level.min(127)));
        match self.levels.iter_mut().find(|(p, _)| *p == participant) {
            Some((_, acc)) => {
                acc.sum = acc.sum.saturating_add(loudness);
                acc.packets = acc.packets.saturating_add(1);
            }
            None => self.levels.push((participant, Acc { sum: loudness, packets: 1 })),
        }
    }

    /// Forgets `participant` (it left).
    pub fn remove(&mut self, participant: ParticipantId) {
        self.levels.retain(|(p, _)| *p != participant);
        if self.current == Some(participant) {
            self.current = None;
        }
        if self.challenger.is_some_and(|(p, _)| p == participant) {
            self.challenger = None;
        }
    }

    /// Ends a window: returns the new speaker when it changed.
    pub fn window(&mut self) -> Option<ParticipantId> {
        let mean = |acc: Acc| if acc.packets >= MIN_PACKETS { acc.sum / acc.packets } else { 0 };
        let loudest = self
            .levels
            .iter()
            .map(|(p, acc)| (*p, mean(*acc)))
            .filter(|(_, m)| *m >= MIN_LOUDNESS)
            .max_by_key(|(p, m)| (*m, std::cmp::Reverse(*p)));
        let current_mean = self
            .current
            .and_then(|c| self.levels.iter().find(|(p, _)| *p == c))
            .map_or(0, |(_, acc)| mean(*acc));
        for (_, acc) in &mut self.levels {
            *acc = Acc::default();
        }
        // A window of silence (everyone below MIN_LOUDNESS) changes
        // nothing: people pause between words, and a challenger's next
        // loud window still counts towards taking over.
        let (candidate, m) = loudest?;
        if Some(candidate) == self.current || m < current_mean + MARGIN {
            self.challenger = None;
            return None;
        }
        let windows = match self.challenger {
            Some((p, n)) if p == candidate => n + 1,
            _ => 1,
        };
        if windows >= HOLD_WINDOWS || self.current.is_none() {
            self.current = Some(candidate);
            self.challenger = None;
            Some(candidate)
        } else {
            self.challenger = Some((candidate, windows));
            None
        }
    }

    /// Who speaks, as last decided.
    pub fn current(&self) -> Option<ParticipantId> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);

    /// Feeds one window: each participant's packets at one level.
    fn window(d: &mut SpeakerDetector, levels: &[(ParticipantId, u8)]) -> Option<ParticipantId> {
        for _ in 0..15 {
            for (p, l) in levels {
                d.level(*p, *l);
            }
        }
        d.window()
    }

    #[test]
    fn first_voice_speaks_at_once_a_challenger_needs_two_louder_windows() {
        let mut d = SpeakerDetector::default();
        assert_eq!(window(&mut d, &[(A, 127), (B, 127)]), None, "silence elects nobody");
        assert_eq!(window(&mut d, &[(A, 30), (B, 127)]), Some(A));
        assert_eq!(window(&mut d, &[(A, 30), (B, 20)]), None, "one louder window is not enough");
        assert_eq!(window(&mut d, &[(A, 30), (B, 29)]), None, "within the margin, and resets");
        assert_eq!(window(&mut d, &[(A, 30), (B, 20)]), None);
        assert_eq!(window(&mut d, &[(A, 30), (B, 20)]), Some(B));
        assert_eq!(d.current(), Some(B));
        assert_eq!(window(&mut d, &[(A, 127), (B, 127)]), None, "silence keeps the last speaker");
        assert_eq!(d.current(), Some(B));
    }

    #[test]
    fn pauses_between_words_do_not_reset_a_challenger() {
        let mut d = SpeakerDetector::default();
        assert_eq!(window(&mut d, &[(A, 30)]), Some(A));
        // A stops; B speaks in bursts with silence between them.
        assert_eq!(window(&mut d, &[(B, 30)]), None);
        assert_eq!(window(&mut d, &[(A, 127), (B, 127)]), None);
        assert_eq!(window(&mut d, &[(B, 30)]), Some(B));
        // The speaker talking again does reset a challenger's run.
        assert_eq!(window(&mut d, &[(A, 30)]), None);
        assert_eq!(window(&mut d, &[(B, 10)]), None);
        assert_eq!(window(&mut d, &[(A, 30)]), None, "A starts again from one");
        assert_eq!(d.current(), Some(B));
    }

    #[test]
    fn few_packets_do_not_count_and_leavers_are_forgotten() {
        let mut d = SpeakerDetector::default();
        for _ in 0..4 {
            d.level(A, 0);
        }
        assert_eq!(d.window(), None);
        assert_eq!(window(&mut d, &[(A, 10)]), Some(A));
        d.remove(A);
        assert_eq!(d.current(), None);
        assert_eq!(window(&mut d, &[(B, 40)]), Some(B));
    }
}
