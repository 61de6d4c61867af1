"""Screenshot of the demo page (reports/demo.png): start ``minbert serve RUN_DIR`` on a free
local port, open ``/`` in headless Chromium (Selenium, /usr/bin/chromium + chromedriver), type
two sentences, press Analyse, wait for the results, save the page as PNG.

    python benchmarks/demo_screenshot.py --run-dir RUN [--out reports/demo.png]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", default=str(REPO / "reports" / "demo.png"))
    ap.add_argument("--a", default="An utterly charming and hilarious film that reminded me why I love the movies.")
    ap.add_argument("--b", default="A very funny and charming movie.")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from minbert.io import atomic_write_bytes

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "minbert", "serve", args.run_dir, "--port", str(port), "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            raise SystemExit("server did not start")
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,900"
        ):
            opts.add_argument(arg)
        service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        driver = webdriver.Chrome(service=service, options=opts)
        try:
            driver.get(base + "/")
            for field, text in (("a", args.a), ("b", args.b)):
                box = driver.find_element(By.ID, field)
                box.clear()
                box.send_keys(text)
            driver.find_element(By.ID, "go").click()
            WebDriverWait(driver, 60).until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error")
            )
            print({k: driver.find_element(By.ID, k).text for k in ("label", "paraphrase", "similarity", "error")})
            atomic_write_bytes(args.out, driver.get_screenshot_as_png())
        finally:
            driver.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
