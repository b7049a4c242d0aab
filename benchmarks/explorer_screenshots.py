"""Screenshots of `cnnzoo explore` for the README: the zoo filtered to "resnet", resnet50's page and
a prediction with Grad-CAM, occlusion and feature maps, in headless Chromium (Debian's package).

    .venv/bin/python benchmarks/explorer_screenshots.py --checkpoint runs/resnet20 [--out docs]

The checkpoint should be a trained one (a prediction of random weights shows little): e.g.
`cnnzoo train --model resnet20 --epochs 2 --train-subset 8000 --out runs/resnet20` (a few minutes on
two cores). Each PNG is checked to stay under 300 KB.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.browser: the server and browser set-up

from tests.browser import browser_missing, headless_chromium, running_server  # noqa: E402

MAX_BYTES = 300_000


def save(driver, path: Path, height: int) -> None:
    """The window at ``height`` pixels, as a palette PNG (screenshots of flat pages quantise well)."""
    from PIL import Image

    driver.set_window_size(1280, height)
    time.sleep(0.5)
    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size:,} bytes, over the {MAX_BYTES:,} allowed")
    print(f"wrote {path} ({size:,} bytes)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a trained run folder (Fashion-MNIST) to predict with")
    p.add_argument("--runs", action="append", default=[], help="runs for the charts (not screenshotted)")
    p.add_argument("--out", default="docs", help="folder for the PNGs (default docs)")
    args = p.parse_args()
    if why := browser_missing():
        raise SystemExit(why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from cnnzoo.explore import create_app, zoo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zoo.warm()
    with running_server(create_app([args.checkpoint], args.runs, warm=False)) as url, headless_chromium() as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(url + "/")
        driver.find_element(By.ID, "filter").send_keys("resnet")
        save(driver, out / "explore_zoo.png", 760)

        driver.get(url + "/models/resnet50")
        wait.until(EC.visibility_of_element_located((By.ID, "gmacs")))
        save(driver, out / "explore_model.png", 900)

        driver.get(url + "/try")
        for box in ("occlusion", "features"):
            driver.find_element(By.ID, box).click()
        sample = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "img.sample:nth-of-type(2)")))
        sample.click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "img.map.features")))
        save(driver, out / "explore_predict.png", 900)


if __name__ == "__main__":
    main()
