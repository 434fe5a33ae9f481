import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium, type Browser, type Page } from 'playwright-core';

/** Debian's chromium (`.ci/run` installs it). Playwright's own browser downloads are never used. */
export const CHROMIUM = '/usr/bin/chromium';

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install chromium (as .ci/run does)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * The few browser globals the functions below run with inside the page (this project compiles
 * without the DOM library, so they are declared here rather than imported).
 */
interface PageElement {
  id: string;
  textContent: string | null;
  matches(selector: string): boolean;
}
declare const document: { activeElement: PageElement | null; documentElement: { scrollWidth: number } };
declare function getComputedStyle(element: PageElement): { outlineStyle: string; outlineWidth: string };

/** The focused element's id, or undefined. */
export async function focusedId(page: Page): Promise<string | undefined> {
  return page.evaluate(() => document.activeElement?.id || undefined);
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: string[] }>;
}

/**
 * axe-core's serious and critical findings on the page as it is now. The script is evaluated
 * through the DevTools protocol, which the page's CSP (no script at all) does not govern.
 */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(): Promise<{ violations: AxeViolation[] }> } }).axe;
    return (await axe.run()).violations;
  });
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map(({ id, impact, help, nodes }) => ({ id, impact, help, nodes: nodes.map(({ target }) => ({ target })) }));
}

export const SCREENSHOTS = new URL('../../test-output/screenshots/', import.meta.url).pathname;

/**
 * Full-page screenshots at a desktop and the narrowest phone width (WCAG 1.4.10 reflow: 320 CSS
 * px), and whether the page needed horizontal scrolling at that width.
 */
export async function screenshots(page: Page, name: string): Promise<{ overflowsAt320: boolean }> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: `${SCREENSHOTS}${name}-1280.png`, fullPage: true });
  await page.setViewportSize({ width: 320, height: 640 });
  await page.screenshot({ path: `${SCREENSHOTS}${name}-320.png`, fullPage: true });
  const overflowsAt320 = await page.evaluate(() => document.documentElement.scrollWidth > 320);
  await page.setViewportSize({ width: 1280, height: 800 });
  return { overflowsAt320 };
}

/** Presses Tab until the focused element's text is `label`; fails after `max` presses. */
export async function tabTo(page: Page, label: string, max = 20): Promise<void> {
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    const text = await page.evaluate(() => document.activeElement?.textContent?.trim() ?? '');
    if (text === label) return;
  }
  throw new Error(`"${label}" not reached with ${max} presses of Tab`);
}

/** Whether the focused element shows a focus indicator a sighted keyboard user can see. */
export async function focusVisible(page: Page): Promise<boolean> {
  return page.evaluate(() => {
    const element = document.activeElement;
    if (!element || !element.matches(':focus-visible')) return false;
    const style = getComputedStyle(element);
    return style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
  });
}
