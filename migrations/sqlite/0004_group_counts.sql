-- Track counts of the library groups of migration 0003, so a page of albums
-- or artists is cut from one row per group instead of one index entry per
-- track, and the number of groups is counted the same way. The PostgreSQL
-- migration of the same number keeps the same rows.
--
-- One row per distinct value of each group column of tracks: group_column
-- names the column (album_group, album_artist_group or artist_group) and
-- group_key is its value. track_count is the number of tracks with that
-- value. A row is removed when its count reaches 0, so the rows of one
-- group_column are exactly the groups that GROUP BY on that column returns.
-- Tracks whose group column is NULL are not counted; the triggers of 0003
-- fill the group columns of every track.
CREATE TABLE library_groups (
    group_column  TEXT    NOT NULL
        CHECK (group_column IN ('album_group', 'album_artist_group', 'artist_group')),
    group_key     TEXT    NOT NULL,
    track_count   INTEGER NOT NULL,
    PRIMARY KEY (group_column, group_key)
) WITHOUT ROWID;

INSERT INTO library_groups (group_column, group_key, track_count)
    SELECT 'album_group', album_group, COUNT(*) FROM tracks
    WHERE album_group IS NOT NULL GROUP BY album_group;
INSERT INTO library_groups (group_column, group_key, track_count)
    SELECT 'album_artist_group', album_artist_group, COUNT(*) FROM tracks
    WHERE album_artist_group IS NOT NULL GROUP BY album_artist_group;
INSERT INTO library_groups (group_column, group_key, track_count)
    SELECT 'artist_group', artist_group, COUNT(*) FROM tracks
    WHERE artist_group IS NOT NULL GROUP BY artist_group;

-- A track is inserted with NULL group columns, which the insert trigger of
-- 0003 then fills with an UPDATE, so the update trigger below counts it.
-- This trigger counts only group values given in the INSERT itself, which
-- the catalog never gives, so that such a row is counted exactly too.
CREATE TRIGGER library_groups_on_insert AFTER INSERT ON tracks
BEGIN
    INSERT INTO library_groups (group_column, group_key, track_count)
        SELECT 'album_group', NEW.album_group, 1 WHERE NEW.album_group IS NOT NULL
        ON CONFLICT (group_column, group_key) DO UPDATE SET track_count = track_count + 1;
    INSERT INTO library_groups (group_column, group_key, track_count)
        SELECT 'album_artist_group', NEW.album_artist_group, 1 WHERE NEW.album_artist_group IS NOT NULL
        ON CONFLICT (group_column, group_key) DO UPDATE SET track_count = track_count + 1;
    INSERT INTO library_groups (group_column, group_key, track_count)
        SELECT 'artist_group', NEW.artist_group, 1 WHERE NEW.artist_group IS NOT NULL
        ON CONFLICT (group_column, group_key) DO UPDATE SET track_count = track_count + 1;
END;

-- Moves the track from its old groups to its new ones, for each column
-- whose value changed. The triggers of 0003 change them when they fill the
-- columns of a new track (from NULL) and when they refill them after a
-- change of album_key or artist_key.
CREATE TRIGGER library_groups_on_update
AFTER UPDATE OF album_group, album_artist_group, artist_group ON tracks
WHEN OLD.album_group IS NOT NEW.album_group
    OR OLD.album_artist_group IS NOT NEW.album_artist_group
    OR OLD.artist_group IS NOT NEW.artist_group
BEGIN
    INSERT INTO library_groups (group_column, group_key, track_count)
        SELECT 'album_group', NEW.album_group, 1
        WHERE NEW.album_group IS NOT NULL AND NEW.album_group IS NOT OLD.album_group
        ON CONFLICT (group_column, group_key) DO UPDATE SET track_count = track_count + 1;
    INSERT INTO library_groups (group_column, group_key, track_count)
        SELECT 'album_artist_group', NEW.album_artist_group, 1
        WHERE NEW.album_artist_group IS NOT NULL AND NEW.album_artist_group IS NOT OLD.album_artist_group
        ON CONFLICT (group_column, group_key) DO UPDATE SET track_count = track_count + 1;
    INSERT INTO library_groups (group_column, group_key, track_count)
        SELECT 'artist_group', NEW.artist_group, 1
        WHERE NEW.artist_group IS NOT NULL AND NEW.artist_group IS NOT OLD.artist_group
        ON CONFLICT (group_column, group_key) DO UPDATE SET track_count = track_count + 1;

    UPDATE library_groups SET track_count = track_count - 1
        WHERE group_column = 'album_group' AND group_key = OLD.album_group
        AND OLD.album_group IS NOT NEW.album_group;
    UPDATE library_groups SET track_count = track_count - 1
        WHERE group_column = 'album_artist_group' AND group_key = OLD.album_artist_group
        AND OLD.album_artist_group IS NOT NEW.album_artist_group;
    UPDATE library_groups SET track_count = track_count - 1
        WHERE group_column = 'artist_group' AND group_key = OLD.artist_group
        AND OLD.artist_group IS NOT NEW.artist_group;

    DELETE FROM library_groups
        WHERE group_column = 'album_group' AND group_key = OLD.album_group AND track_count <= 0;
    DELETE FROM library_groups
        WHERE group_column = 'album_artist_group' AND group_key = OLD.album_artist_group AND track_count <= 0;
    DELETE FROM library_groups
        WHERE group_column = 'artist_group' AND group_key = OLD.artist_group AND track_count <= 0;
END;

-- Runs once per deleted row, also for a DELETE without WHERE such as the
-- one that clears the catalog before a snapshot is imported.
CREATE TRIGGER library_groups_on_delete AFTER DELETE ON tracks
BEGIN
    UPDATE library_groups SET track_count = track_count - 1
        WHERE group_column = 'album_group' AND group_key = OLD.album_group;
    UPDATE library_groups SET track_count = track_count - 1
        WHERE group_column = 'album_artist_group' AND group_key = OLD.album_artist_group;
    UPDATE library_groups SET track_count = track_count - 1
        WHERE group_column = 'artist_group' AND group_key = OLD.artist_group;

    DELETE FROM library_groups
        WHERE group_column = 'album_group' AND group_key = OLD.album_group AND track_count <= 0;
    DELETE FROM library_groups
        WHERE group_column = 'album_artist_group' AND group_key = OLD.album_artist_group AND track_count <= 0;
    DELETE FROM library_groups
        WHERE group_column = 'artist_group' AND group_key = OLD.artist_group AND track_count <= 0;
END;
