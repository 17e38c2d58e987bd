import type { Track } from "../api";
import { useI18n } from "../i18n";

/** Badges of a track's replica states, when the node reports them. */
export function ReplicaHealth({ track }: { track: Track }) {
  const { t } = useI18n();
  if (!track.replica_health || track.replica_health.length === 0) return null;
  return (
    <ul className="replicas" aria-label={t("replicas.label")}>
      {track.replica_health.map((replica) => {
        const known = ["ok", "bad", "corrupt", "missing", "node_down"].includes(replica.state);
        const state = known ? t(`replicas.state.${replica.state}` as "replicas.state.ok") : replica.state;
        return (
          <li key={replica.node_id} className={`badge replica-${replica.state}`} title={`${replica.node_id}: ${state}`}>
            {replica.node_id}: {state}
          </li>
        );
      })}
    </ul>
  );
}
