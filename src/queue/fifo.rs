//! A first-in, first-out line that grows by fixed chunks: a push never copies what is
//! already queued, so a line a million long grows as smoothly as a short one (a `VecDeque`
//! or a `BinaryHeap` doubles its buffer and copies every entry in one push). Written here,
//! in a few lines, because the crates that offer it bring far more than a queue needs.

use std::collections::VecDeque;

/// Entries per chunk: 1,024 × 24 B, so a chunk is a few pages and a short line costs one.
const CHUNK: usize = 1024;

/// A chunked FIFO (see the module's documentation).
pub(crate) struct Fifo<T> {
    /// Full chunks in order, the last one possibly partly filled; the first one's entries
    /// before `head` are already taken.
    chunks: VecDeque<Vec<T>>,
    head: usize,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
            head: 0,
        }
    }
}

impl<T> Fifo<T> {
    pub(crate) fn push_back(&mut self, value: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push_back(chunk);
            }
        }
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(|c| c.get(self.head))
    }

    /// Takes the first entry.
    pub(crate) fn pop_front(&mut self) -> Option<T>
    where
        T: Copy,
    {
        let only = self.chunks.len() == 1;
        let first = self.chunks.front_mut()?;
        let value = *first.get(self.head)?;
        self.head += 1;
        if self.head == first.len() {
            if only {
                // The only chunk, emptied: reuse it from the start.
                first.clear();
            } else {
                self.chunks.pop_front();
            }
            self.head = 0;
        }
        Some(value)
    }

    /// Entries in the line.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>() - self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_the_order_they_went_in_across_chunks() {
        let mut f = Fifo::default();
        let mut model = VecDeque::new();
        // Interleave pushes and pops so chunks fill, empty and get dropped mid-way.
        for round in 0..5u32 {
            for i in 0..(CHUNK as u32 * 2 + 7) {
                f.push_back(round * 10_000 + i);
                model.push_back(round * 10_000 + i);
            }
            for _ in 0..(CHUNK + round as usize * 300) {
                assert_eq!(f.front(), model.front());
                assert_eq!(f.pop_front(), model.pop_front());
            }
            assert_eq!(f.len(), model.len());
        }
        while let Some(v) = model.pop_front() {
            assert_eq!(f.pop_front(), Some(v));
        }
        assert_eq!(f.len(), 0);
        assert!(f.front().is_none());
        assert_eq!(f.pop_front(), None);
    }

    #[test]
    fn an_emptied_line_takes_entries_again() {
        let mut f = Fifo::default();
        f.push_back(1u8);
        assert_eq!(f.pop_front(), Some(1));
        assert_eq!(f.pop_front(), None);
        f.push_back(2);
        f.push_back(3);
        assert_eq!(f.front(), Some(&2));
        assert_eq!(f.len(), 2);
        assert_eq!(f.pop_front(), Some(2));
        assert_eq!(f.pop_front(), Some(3));
    }
}
