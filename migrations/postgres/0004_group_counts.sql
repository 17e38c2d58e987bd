-- Track counts of the library groups of migration 0003, so a page of albums
-- or artists is cut from one row per group instead of one index entry per
-- track, and the number of groups is counted the same way. The SQLite
-- migration of the same number keeps the same rows.
--
-- One row per distinct value of each group column of tracks: group_column
-- names the column (album_group, album_artist_group or artist_group) and
-- group_key is its value. track_count is the number of tracks with that
-- value. A row is removed when its count reaches 0, so the rows of one
-- group_column are exactly the groups that GROUP BY on that column returns.
-- The triggers below keep the counts for INSERT, UPDATE and DELETE, but
-- not for TRUNCATE, which the catalog never runs on tracks.
CREATE TABLE library_groups (
    group_column  TEXT COLLATE "C" NOT NULL
        CHECK (group_column IN ('album_group', 'album_artist_group', 'artist_group')),
    -- "C" orders keys byte by byte, like the group columns and SQLite.
    group_key     TEXT COLLATE "C" NOT NULL,
    track_count   BIGINT NOT NULL,
    PRIMARY KEY (group_column, group_key)
);

INSERT INTO library_groups (group_column, group_key, track_count)
    SELECT 'album_group', album_group, COUNT(*) FROM tracks
    WHERE album_group IS NOT NULL GROUP BY album_group;
INSERT INTO library_groups (group_column, group_key, track_count)
    SELECT 'album_artist_group', album_artist_group, COUNT(*) FROM tracks
    WHERE album_artist_group IS NOT NULL GROUP BY album_artist_group;
INSERT INTO library_groups (group_column, group_key, track_count)
    SELECT 'artist_group', artist_group, COUNT(*) FROM tracks
    WHERE artist_group IS NOT NULL GROUP BY artist_group;

-- Inserts and deletes are counted once per statement from its transition
-- table, so a multi-row INSERT or the DELETE that clears the catalog before
-- a snapshot import updates each group once. An INSERT ... ON CONFLICT DO
-- NOTHING lists only the rows it inserted there.
CREATE FUNCTION library_groups_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO library_groups AS counted (group_column, group_key, track_count)
        SELECT added.group_column, added.group_key, COUNT(*)
        FROM (
            SELECT 'album_group' AS group_column, album_group AS group_key FROM inserted_tracks
            UNION ALL SELECT 'album_artist_group', album_artist_group FROM inserted_tracks
            UNION ALL SELECT 'artist_group', artist_group FROM inserted_tracks
        ) AS added
        WHERE added.group_key IS NOT NULL
        GROUP BY added.group_column, added.group_key
        ON CONFLICT (group_column, group_key)
        DO UPDATE SET track_count = counted.track_count + excluded.track_count;
    RETURN NULL;
END;
$$;

CREATE FUNCTION library_groups_count_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE library_groups AS counted
        SET track_count = counted.track_count - removed.track_count
        FROM (
            SELECT gone.group_column, gone.group_key, COUNT(*) AS track_count
            FROM (
                SELECT 'album_group' AS group_column, album_group AS group_key FROM deleted_tracks
                UNION ALL SELECT 'album_artist_group', album_artist_group FROM deleted_tracks
                UNION ALL SELECT 'artist_group', artist_group FROM deleted_tracks
            ) AS gone
            WHERE gone.group_key IS NOT NULL
            GROUP BY gone.group_column, gone.group_key
        ) AS removed
        WHERE counted.group_column = removed.group_column
            AND counted.group_key = removed.group_key;
    -- Only the groups of the deleted rows can have reached 0.
    DELETE FROM library_groups AS counted
        USING (
            SELECT 'album_group' AS group_column, album_group AS group_key FROM deleted_tracks
            UNION SELECT 'album_artist_group', album_artist_group FROM deleted_tracks
            UNION SELECT 'artist_group', artist_group FROM deleted_tracks
        ) AS gone
        WHERE counted.group_column = gone.group_column
            AND counted.group_key = gone.group_key
            AND counted.track_count <= 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER library_groups_on_insert AFTER INSERT ON tracks
    REFERENCING NEW TABLE AS inserted_tracks
    FOR EACH STATEMENT EXECUTE FUNCTION library_groups_count_inserted();

CREATE TRIGGER library_groups_on_delete AFTER DELETE ON tracks
    REFERENCING OLD TABLE AS deleted_tracks
    FOR EACH STATEMENT EXECUTE FUNCTION library_groups_count_deleted();

-- Moves one group count from the old key to the new one.
CREATE FUNCTION library_groups_move(moved_column TEXT, old_key TEXT, new_key TEXT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF old_key IS NOT DISTINCT FROM new_key THEN
        RETURN;
    END IF;
    IF new_key IS NOT NULL THEN
        INSERT INTO library_groups AS counted (group_column, group_key, track_count)
            VALUES (moved_column, new_key, 1)
            ON CONFLICT (group_column, group_key)
            DO UPDATE SET track_count = counted.track_count + 1;
    END IF;
    IF old_key IS NOT NULL THEN
        UPDATE library_groups SET track_count = track_count - 1
            WHERE group_column = moved_column AND group_key = old_key;
        DELETE FROM library_groups
            WHERE group_column = moved_column AND group_key = old_key AND track_count <= 0;
    END IF;
END;
$$;

-- Updates are counted per row, and only when a group changed. The group
-- columns are generated from album_key and artist_key, so an update of
-- other columns, such as the replica set that repair rewrites, calls no
-- trigger function.
CREATE FUNCTION library_groups_count_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM library_groups_move('album_group', OLD.album_group, NEW.album_group);
    PERFORM library_groups_move('album_artist_group', OLD.album_artist_group, NEW.album_artist_group);
    PERFORM library_groups_move('artist_group', OLD.artist_group, NEW.artist_group);
    RETURN NULL;
END;
$$;

CREATE TRIGGER library_groups_on_update AFTER UPDATE OF album_key, artist_key ON tracks
    FOR EACH ROW
    WHEN (OLD.album_group IS DISTINCT FROM NEW.album_group
        OR OLD.album_artist_group IS DISTINCT FROM NEW.album_artist_group
        OR OLD.artist_group IS DISTINCT FROM NEW.artist_group)
    EXECUTE FUNCTION library_groups_count_updated();
