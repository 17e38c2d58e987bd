-- Album and artist groups for the library views, derived from the sort keys
-- of migration 0001. A sort key joins folded components with the separator
-- char(1), which folded text never contains:
--   album_key  = album, album artist (or artist), disc, track number, title
--   artist_key = artist, album, disc, track number, title
-- So the groups are prefixes of those keys, and tracks whose tags differ
-- only in case or accents fall in one group. The PostgreSQL migration of
-- the same number computes byte-identical values.
--
-- album_group is the album and album artist, the identity of an album.
-- album_artist_group has the same two components swapped, so albums can be
-- listed by artist; it identifies the same groups. artist_group is the
-- track artist.
--
-- The columns are stored and filled by triggers rather than generated
-- VIRTUAL, because SQLite reads the table row for a virtual column even
-- when an index contains it, and counting 10,000 albums then reads all
-- 100,000 tracks. Stored, the indexes below answer group counts and pages
-- alone, and the catalog's write path stays unchanged.
ALTER TABLE tracks ADD COLUMN album_group TEXT;
ALTER TABLE tracks ADD COLUMN album_artist_group TEXT;
ALTER TABLE tracks ADD COLUMN artist_group TEXT;

UPDATE tracks SET
        album_group = substr(album_key, 1, instr(album_key, char(1)) + instr(substr(album_key, instr(album_key, char(1)) + 1), char(1)) - 1),
        album_artist_group = substr(album_key, instr(album_key, char(1)) + 1, instr(substr(album_key, instr(album_key, char(1)) + 1), char(1)) - 1) || char(1) || substr(album_key, 1, instr(album_key, char(1)) - 1),
        artist_group = substr(artist_key, 1, instr(artist_key, char(1)) - 1);

CREATE TRIGGER tracks_groups_on_insert AFTER INSERT ON tracks
BEGIN
    UPDATE tracks SET
        album_group = substr(NEW.album_key, 1, instr(NEW.album_key, char(1)) + instr(substr(NEW.album_key, instr(NEW.album_key, char(1)) + 1), char(1)) - 1),
        album_artist_group = substr(NEW.album_key, instr(NEW.album_key, char(1)) + 1, instr(substr(NEW.album_key, instr(NEW.album_key, char(1)) + 1), char(1)) - 1) || char(1) || substr(NEW.album_key, 1, instr(NEW.album_key, char(1)) - 1),
        artist_group = substr(NEW.artist_key, 1, instr(NEW.artist_key, char(1)) - 1)
    WHERE file_id = NEW.file_id;
END;

CREATE TRIGGER tracks_groups_on_update AFTER UPDATE OF album_key, artist_key ON tracks
BEGIN
    UPDATE tracks SET
        album_group = substr(NEW.album_key, 1, instr(NEW.album_key, char(1)) + instr(substr(NEW.album_key, instr(NEW.album_key, char(1)) + 1), char(1)) - 1),
        album_artist_group = substr(NEW.album_key, instr(NEW.album_key, char(1)) + 1, instr(substr(NEW.album_key, instr(NEW.album_key, char(1)) + 1), char(1)) - 1) || char(1) || substr(NEW.album_key, 1, instr(NEW.album_key, char(1)) - 1),
        artist_group = substr(NEW.artist_key, 1, instr(NEW.artist_key, char(1)) - 1)
    WHERE file_id = NEW.file_id;
END;

-- Each index serves GROUP BY ... ORDER BY ... LIMIT in both directions, and
-- the counting of groups, from the index alone. They hold the group key
-- only, so a scan of 100,000 entries stays small; one group's tracks are
-- found by the index and sorted after.
CREATE INDEX tracks_by_album_group ON tracks (album_group);
CREATE INDEX tracks_by_album_artist_group ON tracks (album_artist_group);
CREATE INDEX tracks_by_artist_group ON tracks (artist_group);
