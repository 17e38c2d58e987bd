import { useEffect, useState } from "react";
import { api, formatBytes, type ClusterStatus, type Member, type RepairStatus, type ScrubStatus } from "../api";
import { useI18n } from "../i18n";
import { ringArcs } from "../ring";
import { scrubPhase } from "../scrub";

/** How often the cluster view refreshes, matching the nodes' health checks. */
export const CLUSTER_POLL_MS = 2000;

/** Colours of the ring's arcs, cycled by node order. */
const NODE_COLOURS = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#84cc16", "#f97316"];

export function useClusterStatus(intervalMs: number): { status: ClusterStatus | null; error: unknown } {
  const [status, setStatus] = useState<ClusterStatus | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let controller = new AbortController();
    const poll = () => {
      controller.abort();
      controller = new AbortController();
      api.clusterStatus(controller.signal).then(
        (next) => {
          setStatus(next);
          setError(null);
        },
        (failure: unknown) => {
          if (!controller.signal.aborted) setError(failure);
        },
      );
    };
    poll();
    const timer = window.setInterval(poll, intervalMs);
    return () => {
      window.clearInterval(timer);
      controller.abort();
    };
  }, [intervalMs]);
  return { status, error };
}

export function ClusterView() {
  const { t, describeError } = useI18n();
  const { status, error } = useClusterStatus(CLUSTER_POLL_MS);
  return (
    <section aria-labelledby="cluster-heading">
      <h1 id="cluster-heading">{t("cluster.title")}</h1>
      {error ? <p className="error" role="alert">{describeError(error)}</p> : null}
      {!status && !error && <p className="muted">{t("common.loading")}</p>}
      {status && <ClusterDetails status={status} />}
    </section>
  );
}

function ClusterDetails({ status }: { status: ClusterStatus }) {
  const { t, formatNumber } = useI18n();
  const colourOf = (nodeId: string) => {
    const index = status.members.findIndex((member) => member.id === nodeId);
    return NODE_COLOURS[(index < 0 ? 0 : index) % NODE_COLOURS.length];
  };
  return (
    <>
      <dl className="summary">
        <dt>{t("cluster.thisNode")}</dt>
        <dd data-testid="cluster-node">{status.node_id}</dd>
        <dt>{t("cluster.leader")}</dt>
        <dd data-testid="cluster-leader">{status.leader_id ?? t("cluster.noLeader")}</dd>
        <dt>{t("cluster.term")}</dt>
        <dd data-testid="cluster-term">{formatNumber(status.term)}</dd>
        <dt>{t("cluster.replicationFactor")}</dt>
        <dd>{status.replication_factor}</dd>
        <dt>{t("cluster.ready")}</dt>
        <dd>{status.ready ? t("common.yes") : t("common.no")}</dd>
      </dl>

      <div className="table-scroll">
        <table className="members" aria-label={t("cluster.members")}>
          <thead>
            <tr>
              <th scope="col">{t("cluster.node")}</th>
              <th scope="col">{t("cluster.health")}</th>
              <th scope="col">{t("cluster.role")}</th>
              <th scope="col">{t("cluster.address")}</th>
              <th scope="col">{t("cluster.rtt")}</th>
            </tr>
          </thead>
          <tbody>
            {status.members.map((member) => (
              <tr key={member.id} data-node={member.id}>
                <th scope="row">
                  <span className="swatch" style={{ background: colourOf(member.id) }} aria-hidden="true" /> {member.id}
                  {member.id === status.leader_id && <span className="badge leader">{t("cluster.leaderBadge")}</span>}
                  {member.draining && <span className="badge">{t("cluster.draining")}</span>}
                </th>
                <td>
                  <span className={`badge health-${member.health}`}>{healthLabel(member.health, t)}</span>
                </td>
                <td>{member.voter ? t("cluster.voter") : t("cluster.learner")}</td>
                <td>{member.http_addr}</td>
                <td>{member.rtt_ms === null ? "–" : `${formatNumber(member.rtt_ms, { minimumFractionDigits: 1, maximumFractionDigits: 1 })} ms`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>

      {status.ring && status.ring.length > 0 && (
        <figure className="ring">
          <svg viewBox="0 0 200 200" role="img" aria-labelledby="ring-caption" width="220" height="220">
            {ringArcs(status.ring).map((arc) => (
              <path key={arc.nodeId} d={arc.path} fill={colourOf(arc.nodeId)} fillRule="evenodd" stroke="var(--bg)" strokeWidth="1">
                <title>{`${arc.nodeId}: ${formatNumber(arc.share * 100, { maximumFractionDigits: 1 })} %`}</title>
              </path>
            ))}
          </svg>
          <figcaption id="ring-caption">
            <strong>{t("cluster.ring")}</strong>
            <ul>
              {status.ring.map((entry) => (
                <li key={entry.node_id}>
                  <span className="swatch" style={{ background: colourOf(entry.node_id) }} aria-hidden="true" />{" "}
                  {t("cluster.share", { node: entry.node_id, share: formatNumber(entry.share * 100, { maximumFractionDigits: 1 }) })}
                </li>
              ))}
            </ul>
          </figcaption>
        </figure>
      )}

      {status.repair && <RepairPanel repair={status.repair} />}

      {status.members.some((member) => member.repair || member.scrub) && (
        <div className="workers">
          <h2>{t("cluster.maintenance")}</h2>
          {status.members.map((member) => (
            <MemberWork key={member.id} member={member} />
          ))}
        </div>
      )}
    </>
  );
}

function healthLabel(health: string, t: ReturnType<typeof useI18n>["t"]): string {
  if (health === "up") return t("cluster.health.up");
  if (health === "down") return t("cluster.health.down");
  if (health === "unknown") return t("cluster.health.unknown");
  return health;
}

function RepairPanel({ repair }: { repair: RepairStatus }) {
  const { t, formatNumber } = useI18n();
  return (
    <div className="member-work" data-testid="repair">
      <h2>{t("cluster.repair")}</h2>
      <p>
        {t("cluster.repairQueue", { count: formatNumber(repair.queue_length) })} ·{" "}
        {t("cluster.bytesMoved", { bytes: formatBytes(repair.bytes_moved_total, formatNumber) })}
      </p>
      {repair.under_replicated !== undefined && (
        <p>
          {t("cluster.repairCounts", {
            under: formatNumber(repair.under_replicated),
            unavailable: formatNumber(repair.unavailable ?? 0),
            repaired: formatNumber(repair.files_repaired_total ?? 0),
          })}
        </p>
      )}
      <Transfers active={repair.active} />
    </div>
  );
}

function Transfers({ active }: { active: RepairStatus["active"] }) {
  const { t, formatNumber } = useI18n();
  if (active.length === 0) return null;
  return (
    <ul>
      {active.map((transfer) => (
        <li key={`${transfer.file_id}-${transfer.to}`}>
          <label>
            {t("cluster.transfer", { file: transfer.file_id.slice(0, 12), from: transfer.from, to: transfer.to })}{" "}
            {transfer.bytes_done === null
              ? formatBytes(transfer.bytes_total, formatNumber)
              : t("cluster.transferBytes", {
                  done: formatBytes(transfer.bytes_done, formatNumber),
                  total: formatBytes(transfer.bytes_total, formatNumber),
                })}
            {transfer.bytes_done !== null && <progress max={transfer.bytes_total || 1} value={transfer.bytes_done} />}
          </label>
        </li>
      ))}
    </ul>
  );
}

function MemberWork({ member }: { member: Member }) {
  const { t, formatNumber } = useI18n();
  if (!member.repair && !member.scrub) return null;
  return (
    <article className="member-work" data-node={member.id}>
      <h3>{member.id}</h3>
      {member.repair && (
        <p>
          {t("cluster.repairQueue", { count: formatNumber(member.repair.queue_length) })} ·{" "}
          {t("cluster.bytesMoved", { bytes: formatBytes(member.repair.bytes_moved_total, formatNumber) })}
        </p>
      )}
      {member.repair && <Transfers active={member.repair.active} />}
      {member.scrub && <Scrub scrub={member.scrub} />}
    </article>
  );
}

function Scrub({ scrub }: { scrub: ScrubStatus }) {
  const { t, formatNumber, language } = useI18n();
  const phase = scrubPhase(scrub);
  const errors = formatNumber(scrub.errors_found);
  if (phase.kind === "waiting") return <p>{t("cluster.scrubWaiting")}</p>;
  if (phase.kind === "done") {
    const time = new Date(phase.at).toLocaleTimeString(language);
    return <p>{t("cluster.scrubDone", { checked: formatNumber(phase.checked), time, errors })}</p>;
  }
  return (
    <label>
      {t("cluster.scrub", { checked: formatNumber(phase.checked), total: formatNumber(phase.total), errors })}
      <progress max={phase.total || 1} value={phase.checked} />
    </label>
  );
}
