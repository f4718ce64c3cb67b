// Small inline SVG charts drawn from the summary's figures.

import { h, s } from './dom.js';

const COLORS = {
  Healthy: '#2e8b57',
  Progressing: '#2f6fb3',
  Degraded: '#d98c1f',
  Unhealthy: '#c93c3c',
  Unknown: '#8a96a3',
  Connected: '#2e8b57',
  Stale: '#d98c1f',
  Disconnected: '#c93c3c',
};

function legend(entries) {
  return h(
    'div',
    { class: 'legend' },
    entries.map(([key, n]) =>
      h('span', { dataset: { key, count: n } }, h('i', { class: `swatch-${key}` }), `${key} ${n}`),
    ),
  );
}

// A donut of counts by key (health), with the total in the middle.
export function donut(counts, title) {
  const entries = Object.entries(counts);
  const total = entries.reduce((a, [, n]) => a + n, 0);
  const r = 52;
  const c = 2 * Math.PI * r;
  const svg = s('svg', { class: 'chart donut', viewBox: '0 0 160 160', role: 'img', 'aria-label': title, width: 160, height: 160 });
  svg.append(s('circle', { cx: 80, cy: 80, r, fill: 'none', stroke: '#e7ecf1', 'stroke-width': 22 }));
  let offset = 0;
  for (const [key, n] of entries) {
    if (!n || !total) continue;
    const len = (n / total) * c;
    svg.append(
      s(
        'circle',
        {
          cx: 80,
          cy: 80,
          r,
          fill: 'none',
          stroke: COLORS[key] || '#8a96a3',
          'stroke-width': 22,
          'stroke-dasharray': `${len} ${c - len}`,
          'stroke-dashoffset': -offset,
          transform: 'rotate(-90 80 80)',
        },
        s('title', {}, `${key}: ${n}`),
      ),
    );
    offset += len;
  }
  svg.append(s('text', { x: 80, y: 78, 'text-anchor': 'middle', 'font-size': 24, 'font-weight': 600 }, String(total)));
  svg.append(s('text', { x: 80, y: 98, 'text-anchor': 'middle', class: 'axis' }, 'clusters'));
  return h('div', { class: 'chart-box', dataset: { chart: title } }, svg, legend(entries));
}

// One horizontal bar split by key (connectivity).
export function stacked(counts, title) {
  const entries = Object.entries(counts);
  const total = entries.reduce((a, [, n]) => a + n, 0);
  const width = 400;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} 28`, role: 'img', 'aria-label': title, preserveAspectRatio: 'none' });
  svg.append(s('rect', { x: 0, y: 0, width, height: 28, rx: 4, fill: '#e7ecf1' }));
  let x = 0;
  for (const [key, n] of entries) {
    if (!n || !total) continue;
    const w = (n / total) * width;
    svg.append(s('rect', { x, y: 0, width: w, height: 28, fill: COLORS[key] || '#8a96a3' }, s('title', {}, `${key}: ${n}`)));
    x += w;
  }
  return h('div', { class: 'chart-box', dataset: { chart: title } }, svg, legend(entries));
}

// Bars per version: how many clusters want it and how many run it.
export function versionBars(versions, title) {
  if (!versions.length) return h('p', { class: 'empty' }, 'No versions yet: no cluster is registered.');
  const rowH = 26;
  const labelW = 70;
  const width = 420;
  const max = Math.max(1, ...versions.map((v) => Math.max(v.desired, v.observed)));
  const scale = (n) => ((width - labelW - 40) * n) / max;
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${width} ${versions.length * rowH + 4}`,
    role: 'img',
    'aria-label': title,
  });
  versions.forEach((v, i) => {
    const y = i * rowH + 2;
    svg.append(s('text', { x: 0, y: y + 16 }, v.version));
    svg.append(s('rect', { x: labelW, y: y + 2, width: scale(v.desired), height: 9, fill: '#9bb7d6' }, s('title', {}, `${v.version}: ${v.desired} desired`)));
    svg.append(s('rect', { x: labelW, y: y + 12, width: scale(v.observed), height: 9, fill: '#1f3a5f' }, s('title', {}, `${v.version}: ${v.observed} observed`)));
    svg.append(s('text', { x: labelW + scale(Math.max(v.desired, v.observed)) + 6, y: y + 16, class: 'axis' }, `${v.desired} / ${v.observed}`));
  });
  return h(
    'div',
    { class: 'chart-box', dataset: { chart: title } },
    svg,
    h('div', { class: 'legend' }, h('span', {}, h('i', { class: 'swatch-desired' }), 'desired'), h('span', {}, h('i', { class: 'swatch-observed' }), 'observed (running)')),
  );
}

// A rollout's or a stage's clusters as one bar of their states.
export function progress(counts) {
  const total = Math.max(1, counts.total || 0);
  const parts = [
    ['succeeded', counts.succeeded],
    ['inprogress', counts.inProgress],
    ['failed', counts.failed],
    ['rolledback', counts.rolledBack],
    ['skipped', counts.skipped],
  ];
  const bar = h('div', { class: 'progress', title: parts.map(([k, n]) => `${k} ${n || 0}`).join(', ') });
  for (const [k, n] of parts) {
    if (!n) continue;
    const span = h('span', { class: k });
    span.style.width = `${(100 * n) / total}%`;
    bar.append(span);
  }
  return bar;
}
