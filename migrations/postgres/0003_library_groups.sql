-- Album and artist groups for the library views, derived from the sort keys
-- of migration 0001. A sort key joins folded components with the separator
-- chr(1), which folded text never contains:
--   album_key  = album, album artist (or artist), disc, track number, title
--   artist_key = artist, album, disc, track number, title
-- So the groups are prefixes of those keys, and tracks whose tags differ
-- only in case or accents fall in one group. The SQLite migration of the
-- same number computes byte-identical values.

-- Album and album artist, the identity of an album.
ALTER TABLE tracks ADD COLUMN album_group TEXT COLLATE "C" GENERATED ALWAYS AS (
    split_part(album_key, chr(1), 1) || chr(1) || split_part(album_key, chr(1), 2)
) STORED;

-- The same two components swapped (album artist, then album), so albums
-- can be listed by artist. It identifies the same groups as album_group.
ALTER TABLE tracks ADD COLUMN album_artist_group TEXT COLLATE "C" GENERATED ALWAYS AS (
    split_part(album_key, chr(1), 2) || chr(1) || split_part(album_key, chr(1), 1)
) STORED;

-- The track artist.
ALTER TABLE tracks ADD COLUMN artist_group TEXT COLLATE "C" GENERATED ALWAYS AS (
    split_part(artist_key, chr(1), 1)
) STORED;

-- Each index serves GROUP BY ... ORDER BY ... LIMIT in both directions, and
-- the counting of groups, with index-only scans. They hold the group key
-- only, so a scan of 100,000 entries stays small; one group's tracks are
-- found by the index and sorted after.
CREATE INDEX tracks_by_album_group ON tracks (album_group);
CREATE INDEX tracks_by_album_artist_group ON tracks (album_artist_group);
CREATE INDEX tracks_by_artist_group ON tracks (artist_group);
