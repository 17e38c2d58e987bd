import { useI18n } from "../i18n";

interface PagerProps {
  total: number;
  offset: number;
  limit: number;
  onOffset: (offset: number) => void;
  label: string;
}

/** Previous and next page buttons with "x–y of n". */
export function Pager({ total, offset, limit, onOffset, label }: PagerProps) {
  const { t, formatNumber } = useI18n();
  if (total === 0) return null;
  const first = offset + 1;
  const last = Math.min(offset + limit, total);
  return (
    <nav className="pager" aria-label={label}>
      <button type="button" onClick={() => onOffset(Math.max(offset - limit, 0))} disabled={offset === 0}>
        {t("pager.previous")}
      </button>
      <span aria-live="polite">
        {t("pager.range", { first: formatNumber(first), last: formatNumber(last), total: formatNumber(total) })}
      </span>
      <button type="button" onClick={() => onOffset(offset + limit)} disabled={last >= total}>
        {t("pager.next")}
      </button>
    </nav>
  );
}
