//! The tile grid of a screen: 16-px tiles, sets of tiles, how a scroll moves them, and merging
//! tiles into rectangles. Pure logic.

/// Side of a tile in pixels. Tiles are aligned to the screen's top-left corner.
pub const TILE: u32 = 16;

/// The tile grid of a screen of a given size. Edge tiles are cut to the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub width: u32,
    pub height: u32,
    pub cols: u32,
    pub rows: u32,
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl PixelRect {
    pub fn area(&self) -> u32 {
        self.w * self.h
    }
}

/// A rectangle in tile units (`x`, `y` are a column and row; `w`, `h` counts of tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Grid {
    pub fn new(width: u32, height: u32) -> Grid {
        Grid {
            width,
            height,
            cols: width.div_ceil(TILE),
            rows: height.div_ceil(TILE),
        }
    }

    pub fn len(&self) -> usize {
        (self.cols * self.rows) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn index(&self, col: u32, row: u32) -> usize {
        (row * self.cols + col) as usize
    }

    /// Pixels covered by tile `index`.
    pub fn tile_rect(&self, index: usize) -> PixelRect {
        let col = index as u32 % self.cols;
        let row = index as u32 / self.cols;
        self.pixels(TileRect {
            x: col,
            y: row,
            w: 1,
            h: 1,
        })
    }

    /// Pixels covered by a rectangle of tiles, cut to the screen.
    pub fn pixels(&self, r: TileRect) -> PixelRect {
        let x = r.x * TILE;
        let y = r.y * TILE;
        PixelRect {
            x,
            y,
            w: ((r.x + r.w) * TILE).min(self.width) - x,
            h: ((r.y + r.h) * TILE).min(self.height) - y,
        }
    }

    /// Where the content of tile `index` was before the screen's content moved by `(dx, dy)`
    /// (new pixel `(x, y)` = old pixel `(x + dx, y + dy)`): the old tiles its pixels come from, or
    /// `None` when part of it was outside the old screen (revealed by the move).
    pub fn sources(&self, index: usize, dx: i32, dy: i32) -> Option<impl Iterator<Item = usize>> {
        let r = self.tile_rect(index);
        let x0 = i64::from(r.x) + i64::from(dx);
        let y0 = i64::from(r.y) + i64::from(dy);
        let x1 = x0 + i64::from(r.w); // exclusive
        let y1 = y0 + i64::from(r.h);
        if x0 < 0 || y0 < 0 || x1 > i64::from(self.width) || y1 > i64::from(self.height) {
            return None;
        }
        let t = i64::from(TILE);
        let (c0, c1) = ((x0 / t) as u32, ((x1 - 1) / t) as u32);
        let (r0, r1) = ((y0 / t) as u32, ((y1 - 1) / t) as u32);
        let cols = self.cols;
        Some((r0..=r1).flat_map(move |row| (c0..=c1).map(move |col| (row * cols + col) as usize)))
    }
}

/// A set of tiles of one grid, as a bitset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TileSet {
    bits: Vec<u64>,
    len: usize,
}

impl TileSet {
    pub fn empty(len: usize) -> TileSet {
        TileSet {
            bits: vec![0; len.div_ceil(64)],
            len,
        }
    }

    pub fn full(len: usize) -> TileSet {
        let mut set = TileSet::empty(len);
        for i in 0..len {
            set.insert(i);
        }
        set
    }

    /// Number of tiles of the grid this set belongs to.
    pub fn capacity(&self) -> usize {
        self.len
    }

    pub fn insert(&mut self, i: usize) {
        debug_assert!(i < self.len);
        self.bits[i / 64] |= 1 << (i % 64);
    }

    pub fn remove(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.len && self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + bit)
            })
        })
    }

    /// Adds every tile of `other` (same grid).
    pub fn union_with(&mut self, other: &TileSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    /// Removes every tile of `other` (same grid).
    pub fn subtract(&mut self, other: &TileSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= !b;
        }
    }

    /// This set after the screen's content moved by `(dx, dy)`: a tile is in the result when any
    /// tile its content came from was in this set. Revealed tiles are not.
    pub fn moved(&self, grid: &Grid, dx: i32, dy: i32) -> TileSet {
        let mut out = TileSet::empty(self.len);
        for i in 0..self.len {
            if let Some(mut sources) = grid.sources(i, dx, dy) {
                if sources.any(|s| self.contains(s)) {
                    out.insert(i);
                }
            }
        }
        out
    }
}

/// Merges a set of tiles into rectangles of tiles that cover every tile of the set once: runs in a row
/// separated by at most `gap` clean tiles are joined (a few clean tiles cost less than another
/// image's header), then runs with the same columns in consecutive rows are stacked.
pub fn merge(set: &TileSet, grid: &Grid, gap: u32) -> Vec<TileRect> {
    let mut done: Vec<TileRect> = Vec::new();
    // Rectangles still growing downwards, by their column range.
    let mut open: Vec<TileRect> = Vec::new();
    for row in 0..grid.rows {
        let mut runs: Vec<(u32, u32)> = Vec::new(); // [start, end)
        let mut col = 0;
        while col < grid.cols {
            if !set.contains(grid.index(col, row)) {
                col += 1;
                continue;
            }
            let start = col;
            let mut end = col + 1;
            let mut probe = end;
            while probe < grid.cols && probe - end <= gap {
                if set.contains(grid.index(probe, row)) {
                    end = probe + 1;
                }
                probe += 1;
            }
            runs.push((start, end));
            col = end;
        }
        let mut next_open = Vec::with_capacity(runs.len());
        for (start, end) in runs {
            match open.iter().position(|r| r.x == start && r.x + r.w == end) {
                Some(i) => {
                    let mut r = open.swap_remove(i);
                    r.h += 1;
                    next_open.push(r);
                }
                None => next_open.push(TileRect {
                    x: start,
                    y: row,
                    w: end - start,
                    h: 1,
                }),
            }
        }
        done.append(&mut open);
        open = next_open;
    }
    done.append(&mut open);
    done.sort_by_key(|r| (r.y, r.x));
    done
}

/// One rectangle per tile row that has tiles of `set`, from its first to its last such tile,
/// with identical neighbouring rows stacked: a coarse cover whose size is bounded by the rows.
pub fn bands(set: &TileSet, grid: &Grid) -> Vec<TileRect> {
    let mut out: Vec<TileRect> = Vec::new();
    for row in 0..grid.rows {
        let cols = (0..grid.cols).filter(|&c| set.contains(grid.index(c, row)));
        let (Some(first), Some(last)) = (cols.clone().min(), cols.max()) else {
            continue;
        };
        let band = TileRect {
            x: first,
            y: row,
            w: last - first + 1,
            h: 1,
        };
        match out.last_mut() {
            Some(prev) if prev.x == band.x && prev.w == band.w && prev.y + prev.h == row => {
                prev.h += 1
            }
            _ => out.push(band),
        }
    }
    out
}

/// Joins rectangles until at most `max` remain, each time the pair whose bounding box adds the
/// fewest tiles. Each rectangle costs the viewer an image decode (~1 ms in a browser, whatever its
/// size), so a few bigger rectangles paint faster than many small ones. The result covers every
/// tile of the input (and the clean tiles between joined ones).
pub fn limit(mut rects: Vec<TileRect>, max: usize) -> Vec<TileRect> {
    let area = |r: &TileRect| r.w * r.h;
    let join = |a: &TileRect, b: &TileRect| {
        let x = a.x.min(b.x);
        let y = a.y.min(b.y);
        TileRect {
            x,
            y,
            w: (a.x + a.w).max(b.x + b.w) - x,
            h: (a.y + a.h).max(b.y + b.h) - y,
        }
    };
    while rects.len() > max.max(1) {
        let mut best = (0, 1, u32::MAX);
        for i in 0..rects.len() {
            for j in i + 1..rects.len() {
                let j_area = join(&rects[i], &rects[j]);
                let added = area(&j_area).saturating_sub(area(&rects[i]) + area(&rects[j]));
                if added < best.2 {
                    best = (i, j, added);
                }
            }
        }
        let (i, j, _) = best;
        // j > i: remove j first so that i keeps its index.
        let b = rects.swap_remove(j);
        let a = rects.swap_remove(i);
        let mut joined = join(&a, &b);
        // The joined rectangle may now overlap others: absorb them, so no tile is sent twice.
        let overlaps = |a: &TileRect, b: &TileRect| {
            a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
        };
        while let Some(k) = rects.iter().position(|r| overlaps(&joined, r)) {
            joined = join(&joined, &rects.swap_remove(k));
        }
        rects.push(joined);
    }
    rects.sort_by_key(|r| (r.y, r.x));
    rects
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random set of `n` draws over the grid.
    fn scattered(grid: &Grid, seed: u32, n: usize) -> TileSet {
        let mut s = TileSet::empty(grid.len());
        let mut x = seed;
        for _ in 0..n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            s.insert((x as usize >> 8) % grid.len());
        }
        s
    }

    /// The tiles the rectangles cover, checking that none is covered twice and that every tile
    /// of `set` is covered.
    fn covered_once(rects: &[TileRect], set: &TileSet, grid: &Grid) -> TileSet {
        let mut covered = TileSet::empty(grid.len());
        for r in rects {
            for row in r.y..r.y + r.h {
                for col in r.x..r.x + r.w {
                    let i = grid.index(col, row);
                    assert!(!covered.contains(i), "tile {i} covered twice");
                    covered.insert(i);
                }
            }
        }
        let mut missing = set.clone();
        missing.subtract(&covered);
        assert!(
            missing.is_empty(),
            "uncovered tiles: {:?}",
            missing.iter().collect::<Vec<_>>()
        );
        covered
    }

    fn set_of(grid: &Grid, tiles: &[(u32, u32)]) -> TileSet {
        let mut s = TileSet::empty(grid.len());
        for &(c, r) in tiles {
            s.insert(grid.index(c, r));
        }
        s
    }

    #[test]
    fn grid_cuts_edge_tiles() {
        let g = Grid::new(40, 20);
        assert_eq!((g.cols, g.rows, g.len()), (3, 2, 6));
        assert_eq!(
            g.tile_rect(5),
            PixelRect {
                x: 32,
                y: 16,
                w: 8,
                h: 4
            }
        );
    }

    #[test]
    fn tileset_operations() {
        let mut a = TileSet::empty(130);
        a.insert(0);
        a.insert(64);
        a.insert(129);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 64, 129]);
        assert_eq!(a.count(), 3);
        let mut b = TileSet::empty(130);
        b.insert(64);
        a.subtract(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 129]);
        a.union_with(&b);
        assert!(a.contains(64) && !a.contains(1) && !a.contains(500));
        assert_eq!(TileSet::full(70).count(), 70);
        assert!(TileSet::empty(70).is_empty());
    }

    #[test]
    fn scroll_sources_follow_the_content() {
        // 4×4 tiles. Scrolled down by 16: row 0 now shows old row 1.
        let g = Grid::new(64, 64);
        let s: Vec<_> = g.sources(g.index(1, 0), 0, 16).expect("in").collect();
        assert_eq!(s, vec![g.index(1, 1)]);
        // By 20: old rows 1 and 2.
        let s: Vec<_> = g.sources(g.index(1, 0), 0, 20).expect("in").collect();
        assert_eq!(s, vec![g.index(1, 1), g.index(1, 2)]);
        // The bottom row is revealed.
        assert!(g.sources(g.index(0, 3), 0, 16).is_none());
        // Scrolled up (content moves down): the top row is revealed.
        assert!(g.sources(g.index(0, 0), 0, -5).is_none());
        // Scrolled left by 3 px: a tile's content comes from two old columns; the left column is
        // revealed.
        let s: Vec<_> = g.sources(g.index(1, 2), -3, 0).expect("in").collect();
        assert_eq!(s, vec![g.index(0, 2), g.index(1, 2)]);
        assert!(g.sources(g.index(0, 2), -3, 0).is_none());
    }

    #[test]
    fn sets_move_with_the_content() {
        let g = Grid::new(64, 64);
        let s = set_of(&g, &[(2, 2)]);
        let moved = s.moved(&g, 0, 16);
        assert_eq!(moved, set_of(&g, &[(2, 1)]));
        // A move that is not a tile multiple spreads a tile over two.
        let moved = s.moved(&g, 0, 8);
        assert_eq!(moved, set_of(&g, &[(2, 1), (2, 2)]));
    }

    #[test]
    fn merges_neighbours_into_rectangles() {
        // 10×10 tiles: a 3×2 block and a lone tile far away.
        let g = Grid::new(160, 160);
        let s = set_of(
            &g,
            &[(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2), (8, 8)],
        );
        let rects = merge(&s, &g, 0);
        assert_eq!(
            rects,
            vec![
                TileRect {
                    x: 1,
                    y: 1,
                    w: 3,
                    h: 2
                },
                TileRect {
                    x: 8,
                    y: 8,
                    w: 1,
                    h: 1
                }
            ]
        );
        // A one-tile gap is bridged when allowed, not otherwise.
        let s = set_of(&g, &[(0, 0), (2, 0)]);
        assert_eq!(merge(&s, &g, 0).len(), 2);
        assert_eq!(
            merge(&s, &g, 1),
            vec![TileRect {
                x: 0,
                y: 0,
                w: 3,
                h: 1
            }]
        );
    }

    #[test]
    fn limiting_rectangles_keeps_every_tile_covered_once() {
        let g = Grid::new(1280, 720);
        let s = scattered(&g, 99, 200);
        let rects = limit(merge(&s, &g, 0), 6);
        assert!(rects.len() <= 6);
        covered_once(&rects, &s, &g);
        // Two far-apart pairs of neighbours become two rectangles, not one big one.
        let t = |c, r| TileRect {
            x: c,
            y: r,
            w: 1,
            h: 1,
        };
        let joined = limit(vec![t(0, 0), t(1, 0), t(70, 40), t(70, 41)], 2);
        assert_eq!(
            joined,
            vec![
                TileRect {
                    x: 0,
                    y: 0,
                    w: 2,
                    h: 1
                },
                TileRect {
                    x: 70,
                    y: 40,
                    w: 1,
                    h: 2
                }
            ]
        );
    }

    #[test]
    fn bands_cover_a_scattered_set_with_one_rectangle_per_row_at_most() {
        let g = Grid::new(1280, 720);
        let mut s = TileSet::empty(g.len());
        for i in (0..g.len()).step_by(4) {
            s.insert(i);
        }
        let b = bands(&s, &g);
        assert!(b.len() <= g.rows as usize);
        for i in s.iter() {
            let (c, r) = (i as u32 % g.cols, i as u32 / g.cols);
            assert!(b
                .iter()
                .any(|t| c >= t.x && c < t.x + t.w && r >= t.y && r < t.y + t.h));
        }
        assert!(limit(b, 6).len() <= 6);
    }

    #[test]
    fn merged_rectangles_cover_every_tile_once() {
        let g = Grid::new(1280, 720);
        let s = scattered(&g, 12345, 900);
        for gap in [0, 2] {
            let covered = covered_once(&merge(&s, &g, gap), &s, &g);
            if gap == 0 {
                assert_eq!(covered, s, "no gap: exactly the set");
            }
        }
    }
}
