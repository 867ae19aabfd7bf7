#!/usr/bin/env python3
"""Drives Volley's web UI in headless Chromium (Debian's chromium and
chromium-driver, through Selenium) as a user would, and reports what the
pages show as JSON. Waits are on DOM conditions, never on time alone.

Usage: ui_check.py BASE_URL SCREENSHOT_DIR STEP...; the token comes from
VOLLEY_UI_TOKEN. Steps, run in order:
  login                      log in through the form; the jobs page loads
  jobs:NAME:JOB              the jobs page lists JOB; screenshot NAME.png
  job:NAME:JOB:STATE         JOB's page shows STATE; screenshot NAME.png
  live:JOB:STATE             the open job page turns to STATE without a reload
  executors:NAME             the executors page; screenshot NAME.png
Prints {"steps": [{...counts...}, ...]}.
"""
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# Upper bound for a DOM condition to come true; a page that never gets
# there is a failure, whatever the machine's speed.
PATIENCE = 120


def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1400,1000",
        # The test cluster's certificates come from its own CA.
        "--ignore-certificate-errors",
    ]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def loaded(browser):
    return browser.execute_script("return document.body && document.body.dataset.loaded === 'true'")


def text_of(browser, element_id):
    """The text of an element, read in one step: the pages redraw (replace
    their elements) while a job runs, so a found element may go stale
    before its text is read."""
    return browser.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : null",
        element_id)


def main():
    base, shots, steps = sys.argv[1], sys.argv[2], sys.argv[3:]
    token = os.environ["VOLLEY_UI_TOKEN"]
    browser = driver()
    wait = WebDriverWait(browser, PATIENCE, poll_frequency=0.1)
    out = []
    try:
        for step in steps:
            kind, *args = step.split(":")
            if kind == "login":
                browser.get(base + "/")
                wait.until(lambda b: "/login" in b.current_url)
                browser.find_element(By.ID, "token").send_keys(token)
                browser.find_element(By.ID, "login").click()
                wait.until(lambda b: b.current_url.rstrip("/") == base and loaded(b))
                out.append({"step": step, "url": browser.current_url})
            elif kind == "jobs":
                name, job = args
                browser.get(base + "/")
                wait.until(lambda b: loaded(b) and b.find_elements(By.CSS_SELECTOR, f'tr.job-row[data-job="{job}"]'))
                rows = browser.find_elements(By.CSS_SELECTOR, "tr.job-row")
                browser.save_screenshot(os.path.join(shots, name + ".png"))
                out.append({"step": step, "rows": len(rows)})
            elif kind == "job":
                name, job, state = args
                browser.get(base + "/jobs/" + job)
                wait.until(lambda b: loaded(b)
                           and b.execute_script("return document.body.dataset.state") == state
                           and b.find_elements(By.CSS_SELECTOR, "#dag g.stage-node")
                           and b.find_elements(By.CSS_SELECTOR, "#timeline rect.task"))
                result = {
                    "step": step,
                    "stage_nodes": len(browser.find_elements(By.CSS_SELECTOR, "#dag g.stage-node")),
                    "stage_edges": len(browser.find_elements(By.CSS_SELECTOR, "#dag path.stage-edge")),
                    "task_bars": len(browser.find_elements(By.CSS_SELECTOR, "#timeline rect.task")),
                    "executor_lanes": len(browser.find_elements(By.CSS_SELECTOR, "#timeline text.executor-lane")),
                    "stage_rows": len(browser.find_elements(By.CSS_SELECTOR, "#stages tr.stage-row")),
                    "state_text": text_of(browser, "job-state"),
                    "source": browser.execute_script(
                        "const s = document.getElementById('source-text'); return s ? s.textContent : ''"),
                    "rows_in_out": browser.execute_script(
                        "return [...document.querySelectorAll('#stages tr.stage-row')]"
                        ".map(r => { const c = r.querySelectorAll('td'); return [c[4].textContent, c[6].textContent]; })"),
                    "plans_with_metrics": browser.execute_script(
                        "return [...document.querySelectorAll('#stages pre')]"
                        ".filter(p => p.textContent.includes('metrics=[output_rows=')).length"),
                }
                browser.save_screenshot(os.path.join(shots, name + ".png"))
                out.append(result)
                # The driver of this script may act on a page being shown.
                print("shown " + name, flush=True)
            elif kind == "live":
                job, state = args
                # A reload would drop this mark.
                browser.execute_script("window.volleyMark = 42")
                wait.until(lambda b: text_of(b, "job-state") == state)
                same_page = browser.execute_script("return window.volleyMark") == 42
                out.append({"step": step, "state_text": state, "same_page": same_page,
                            "url": browser.current_url})
            elif kind == "executors":
                (name,) = args
                browser.get(base + "/executors")
                wait.until(lambda b: loaded(b) and b.find_elements(By.CSS_SELECTOR, "tr.executor-row"))
                rows = browser.find_elements(By.CSS_SELECTOR, "tr.executor-row")
                browser.save_screenshot(os.path.join(shots, name + ".png"))
                # Shuffle held in memory, on disk, and spilled: the last
                # three cells of each row.
                shuffle = browser.execute_script(
                    "return [...document.querySelectorAll('tr.executor-row')]"
                    ".map(r => [...r.querySelectorAll('td')].slice(-3).map(c => c.textContent))")
                out.append({"step": step, "rows": len(rows), "shuffle": shuffle})
            else:
                raise SystemExit("unknown step " + step)
    finally:
        browser.quit()
    print(json.dumps({"steps": out}), flush=True)


if __name__ == "__main__":
    main()
